"""warmup (bridge part a): move the student within a small KL of the teacher on teacher rollouts.

`forward_kl` (default): TRL's GKD trainer with lmbda=0 (only the cached teacher sequences, never
student samples) and beta=0, i.e. token-level KL(pi_T || pi_S) over the full vocabulary with the
teacher scoring every position. `sft`: TRL `SFTTrainer` on the same sequences (the sampled-token
version of the same KL; the paper's weaker baseline). Either way the stage reports forward KL on
held-out teacher rollouts before and after training.

    python -m sparse2dense.stages.warmup SPEC.json
"""

from __future__ import annotations

import math
from pathlib import Path

from datasets import Dataset
from trl import SFTConfig, SFTTrainer
from trl.experimental.gkd import GKDConfig, GKDTrainer
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from sparse2dense.config import WarmupSection
from sparse2dense.data import load_records
from sparse2dense.diagnostics import measure_divergence
from sparse2dense.launch import DeviceFacts, batch_fields
from sparse2dense.models import load_model, load_tokenizer, save_trained
from sparse2dense.preflight import check_tokenizers
from sparse2dense.spec import StageSpec
from sparse2dense.stages import Stage
from sparse2dense.stages.program import (
    StageOutput,
    latest_checkpoint,
    logged_mean_loss,
    run_stage,
    training_args,
    training_callbacks,
)


def build_warmup_config(
    section: WarmupSection, spec: StageSpec, out_dir: Path, num_rows: int, facts: DeviceFacts | None = None
) -> GKDConfig | SFTConfig:
    """Our warmup section mapped onto TRL's GKDConfig (forward KL) or SFTConfig: `batch_size`
    sequences over all processes per optimizer step (`facts`: the hardware, detected when not given)."""
    facts = facts or DeviceFacts.detect()
    steps = max(1, math.ceil(num_rows * section.epochs / section.batch_size))
    args = {
        **training_args(
            spec, out_dir, section.logging_steps, section.checkpoint_every, section.memory, facts
        ),
        **batch_fields(section.batch_size, section.memory, facts, f"{spec.name}.memory"),
        "max_steps": steps,
        "learning_rate": section.learning_rate,
        "lr_scheduler_type": "cosine",
        "warmup_steps": max(steps // 20, 1),
        "max_length": section.max_length,
    }
    if section.objective == "sft":
        return SFTConfig(**args, completion_only_loss=True)
    return GKDConfig(**args, lmbda=0.0, beta=0.0, temperature=1.0, seq_kd=False)


def build_trainer(
    section: WarmupSection, spec: StageSpec, out_dir: Path, student, teacher, tokenizer, rows, args=None
):
    """GKD (forward KL) or SFT on the teacher sequences: the only place our names meet TRL's."""
    args = args or build_warmup_config(section, spec, out_dir, len(rows))
    callbacks = training_callbacks(spec.name, str(spec.stage), out_dir)
    if section.objective == "sft":
        # The rollout's own ids, tokenized data for TRL: re-tokenizing the text would add a second
        # BOS where the template writes one and can split the teacher's tokens differently.
        data = Dataset.from_list(
            [
                {
                    "input_ids": r["prompt_ids"] + r["completion_ids"],
                    "completion_mask": [0] * len(r["prompt_ids"]) + [1] * len(r["completion_ids"]),
                }
                for r in rows
            ]
        )
        return SFTTrainer(
            model=student,
            args=args,
            train_dataset=data,
            processing_class=tokenizer,
            callbacks=callbacks,
        )
    data = Dataset.from_list(
        [
            {
                "input_ids": r["prompt_ids"] + r["completion_ids"],
                "labels": [-100] * len(r["prompt_ids"]) + r["completion_ids"],
            }
            for r in rows
        ]
    )
    return GKDTrainer(
        model=student,
        teacher_model=teacher,
        args=args,
        data_collator=DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id),
        train_dataset=data,
        processing_class=tokenizer,
        callbacks=callbacks,
    )


def run_warmup(spec: StageSpec, out_dir: Path) -> StageOutput:
    section = WarmupSection.model_validate(spec.config["warmup"])
    tokenizer = load_tokenizer(spec, "student")
    check_tokenizers(load_tokenizer(spec, "teacher"), tokenizer)
    rollouts = spec.upstream_path("rollouts") / "rollouts"
    rows, heldout = load_records(rollouts / "train.jsonl"), load_records(rollouts / "heldout.jsonl")
    args = build_warmup_config(section, spec, out_dir, len(rows))  # first: under ZeRO-3 it shards the loading
    student, teacher = load_model(spec, "student", trainable=True), load_model(spec, "teacher")
    pairs = [(r["prompt_ids"], r["completion_ids"]) for r in heldout]
    before = measure_divergence(teacher, student, pairs, tokenizer.pad_token_id)
    trainer = build_trainer(section, spec, out_dir, student, teacher, tokenizer, rows, args)
    trainer.train(resume_from_checkpoint=latest_checkpoint(out_dir))
    after = measure_divergence(teacher, trainer.model, pairs, tokenizer.pad_token_id)
    save_trained(trainer, tokenizer, out_dir)
    return StageOutput(
        metrics={
            "forward_kl_before": before["forward_kl"],
            "forward_kl_after": after["forward_kl"],
            "reverse_kl_before": before["reverse_kl"],
            "reverse_kl_after": after["reverse_kl"],
            "train_loss": logged_mean_loss(trainer.state.log_history),
        }
    )


def main() -> None:
    run_stage(Stage.WARMUP, run_warmup)


if __name__ == "__main__":
    main()
