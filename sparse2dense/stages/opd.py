"""opd (bridge part b): on-policy distillation, reverse KL on the student's own samples.

TRL `DistillationTrainer` with beta=1: the student samples completions for unlabeled prompts, the
frozen teacher scores every token, and the loss is token-level KL(pi_S || pi_T) over the full
vocabulary; one optimizer step per rollout batch, no ratio or clipping (the authors' setting).
TRL 1.16 always computes that loss with its chunked divergence kernel (hidden states projected on
tiles of 32768 vocabulary entries), so no [B, T, V] logits are built; only its tile height is set
here (`losses.bound_divergence_tiles`), so the kernel's buffers stop growing at 1024 tokens. Reverse KL and the
implicit reward log pi_T - log pi_S are measured on fresh student samples for a fixed set of
diagnostic prompts before training (once the trainer has prepared the models: under ZeRO-3 neither
`generate` nor a forward works on partitioned weights earlier) and after the trained model is saved.

    python -m sparse2dense.stages.opd SPEC.json
"""

from __future__ import annotations

import random
from pathlib import Path

from datasets import Dataset
from trl import DistillationConfig, DistillationTrainer
from trl.models import unwrap_model_for_generation

from sparse2dense.data import load_records
from sparse2dense.diagnostics import MeasureBeforeTraining, measure_divergence
from sparse2dense.generation import SamplingParams, generate
from sparse2dense.graph import OPDInputs, Stage
from sparse2dense.launch import DeviceFacts, batch_fields
from sparse2dense.losses import bound_divergence_tiles
from sparse2dense.models import load_model, load_tokenizer, save_trained
from sparse2dense.preflight import check_tokenizers
from sparse2dense.prompts import prompt_conversations, render_prompts
from sparse2dense.sections import OPDSection
from sparse2dense.spec import StageSpec
from sparse2dense.stages.program import (
    CHECKPOINTS,
    StageOutput,
    latest_checkpoint,
    run_stage,
    training_args,
    training_callbacks,
)


def build_distillation_config(
    section: OPDSection, spec: StageSpec, out_dir: Path, facts: DeviceFacts | None = None
) -> DistillationConfig:
    """Our OPD section mapped onto TRL's DistillationConfig: `prompts_per_step` prompts over all
    processes per optimizer step (`facts`: the hardware, detected when not given)."""
    facts = facts or DeviceFacts.detect()
    return DistillationConfig(
        **training_args(
            spec, out_dir, section.logging_steps, section.checkpoint_every, section.memory, facts
        ),
        **batch_fields(section.prompts_per_step, section.memory, facts, f"{spec.name}.memory"),
        max_steps=section.steps,
        learning_rate=section.learning_rate,
        weight_decay=section.weight_decay,
        lr_scheduler_type="constant",
        max_completion_length=section.max_completion_length,
        temperature=section.temperature,
        beta=section.beta,
        use_vllm=section.use_vllm,
        vllm_mode=section.vllm_mode,
        vllm_gpu_memory_utilization=section.vllm_gpu_memory_utilization,
        vllm_tensor_parallel_size=section.vllm_tensor_parallel_size,
        vllm_server_base_url=section.vllm_server_base_url,
        chat_template_kwargs=dict(spec.inputs_of(OPDInputs).prompt.chat_template_kwargs),
    )


BEFORE = "divergence-before.json"


def student_sample_divergence(
    trainer: DistillationTrainer, tokenizer, prompts: list[str], section: OPDSection, seed: int
) -> dict[str, float]:
    """Reverse/forward KL on fresh student samples for fixed prompts (same seed before and after).

    The student samples through TRL's own unwrapping (ZeRO-3 weights gathered for `generate`, as
    the trainer does for its rollouts); both models are then scored as the trainer runs them.
    """
    sampling = SamplingParams(
        n=1, temperature=section.temperature, max_new_tokens=section.max_completion_length, seed=seed
    )
    with unwrap_model_for_generation(
        trainer.model_wrapped,
        trainer.accelerator,
        gather_deepspeed3_params=trainer.args.ds3_gather_for_generation,
    ) as student:
        groups = generate(student, tokenizer, prompts, sampling, label="opd diagnostics")
    pairs = [
        (tokenizer(p, add_special_tokens=False)["input_ids"], g[0].token_ids)
        for p, g in zip(prompts, groups, strict=True)
    ]
    return measure_divergence(trainer.teacher_model, trainer.model_wrapped, pairs, tokenizer.pad_token_id)


def run_opd(spec: StageSpec, out_dir: Path) -> StageOutput:
    inputs = spec.inputs_of(OPDInputs)
    section, prompt = inputs.opd, inputs.prompt
    tokenizer = load_tokenizer(spec, "student")
    check_tokenizers(load_tokenizer(spec, "teacher"), tokenizer)
    args = build_distillation_config(section, spec, out_dir)  # first: under ZeRO-3 it shards the loading
    student, teacher = load_model(spec, "student", trainable=True), load_model(spec, "teacher")
    problems = load_records(spec.upstream_path("data") / "splits/unlabeled.jsonl")
    prompts = render_prompts(tokenizer, problems, prompt)
    diagnostic = random.Random(spec.seed).sample(prompts, min(section.diagnostic_prompts, len(prompts)))
    bound_divergence_tiles()
    trainer = DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=args,
        train_dataset=Dataset.from_list([{"prompt": c} for c in prompt_conversations(problems, prompt)]),
        processing_class=tokenizer,
        callbacks=training_callbacks(spec.name, str(spec.stage), out_dir),
    )

    def divergence() -> dict[str, float]:
        return student_sample_divergence(trainer, tokenizer, diagnostic, section, spec.seed)

    before = MeasureBeforeTraining(divergence, out_dir / CHECKPOINTS / BEFORE)
    trainer.add_callback(before)
    trainer.train(resume_from_checkpoint=latest_checkpoint(out_dir))
    save_trained(trainer, tokenizer, out_dir)
    after = divergence()  # after the save: a failure here loses no training (a rerun resumes at the end)
    losses = [float(h["loss"]) for h in trainer.state.log_history if "loss" in h]
    return StageOutput(
        metrics={
            "reverse_kl_before": before.result["reverse_kl"],
            "reverse_kl_after": after["reverse_kl"],
            "forward_kl_before": before.result["forward_kl"],
            "forward_kl_after": after["forward_kl"],
            "implicit_reward_mean_after": after["implicit_reward_mean"],
            "implicit_reward_std_after": after["implicit_reward_std"],
            "loss_first": losses[0] if losses else float("nan"),
            "loss_last": losses[-1] if losses else float("nan"),
        }
    )


def main() -> None:
    run_stage(Stage.OPD, run_opd)


if __name__ == "__main__":
    main()
