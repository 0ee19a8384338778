"""warmup (bridge part a): move the student within a small KL of the teacher on teacher rollouts.

`forward_kl` (default): token-level KL(pi_T || pi_S) over the full vocabulary, token mean, with the
teacher scoring every position of the cached teacher sequences. It runs on TRL's DistillationTrainer
with beta=0, whose generation step is replaced by those sequences (`TeacherSequenceTrainer`): its
chunked divergence kernel never builds [B, T, V] logits (GKD's loss does, ~43 GiB for one 8k-token
sequence at Qwen3's vocabulary). `sft`: TRL `SFTTrainer` on the same sequences (the sampled-token
version of the same KL; the paper's weaker baseline). Sequences are cut to `max_length` tokens
first. Forward KL on held-out teacher rollouts is measured before training (once the trainer has
prepared the models) and after the trained model is saved.

    python -m sparse2dense.stages.warmup SPEC.json
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from trl import DistillationConfig, DistillationTrainer, SFTConfig, SFTTrainer
from trl.trainer.utils import pad

from sparse2dense.data import load_records
from sparse2dense.diagnostics import MeasureBeforeTraining, measure_divergence
from sparse2dense.graph import Stage, WarmupInputs
from sparse2dense.launch import DeviceFacts, batch_fields
from sparse2dense.losses import bound_divergence_tiles
from sparse2dense.models import load_model, load_tokenizer, save_trained
from sparse2dense.preflight import check_tokenizers
from sparse2dense.sections import WarmupSection
from sparse2dense.spec import StageSpec
from sparse2dense.stages.program import (
    CHECKPOINTS,
    StageOutput,
    latest_checkpoint,
    logged_mean_loss,
    run_stage,
    training_args,
    training_callbacks,
)

BEFORE = "divergence-before.json"


def fit_to_max_length(rows: list[dict[str, Any]], max_length: int) -> tuple[list[dict[str, Any]], int, int]:
    """(rows, truncated, dropped): each prompt + completion cut to `max_length` tokens.

    The completion's tail goes; a row whose prompt leaves no room for a completion token is
    dropped. No row left is an error naming `warmup.max_length`.
    """
    fitted, truncated = [], 0
    for row in rows:
        room = max_length - len(row["prompt_ids"])
        if room < 1:
            continue
        if len(row["completion_ids"]) > room:
            row = {**row, "completion_ids": row["completion_ids"][:room]}
            truncated += 1
        fitted.append(row)
    if not fitted:
        longest = max(len(r["prompt_ids"]) for r in rows) if rows else 0
        raise ValueError(
            f"warmup.max_length={max_length} leaves no completion token of any of the {len(rows)} teacher "
            f"sequences (longest prompt: {longest} tokens)"
        )
    return fitted, truncated, len(rows) - len(fitted)


class TeacherSequenceTrainer(DistillationTrainer):
    """DistillationTrainer trained on fixed (teacher) sequences instead of the student's samples.

    Only the generation step is replaced: the rows' `prompt_ids`/`completion_ids` are padded as
    TRL pads its own samples. The loss (TRL's chunked kernel, with the config's beta), the
    teacher's preparation under DeepSpeed/FSDP, batching and resume are TRL's.
    """

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        device, pad_id = self.accelerator.device, self._tokenizer.pad_token_id
        prompts = [torch.tensor(x["prompt_ids"], dtype=torch.long) for x in inputs]
        completions = [torch.tensor(x["completion_ids"], dtype=torch.long) for x in inputs]
        completion_mask = pad([torch.ones_like(c) for c in completions], 0, "right").to(device)  # [B, C]
        return {
            "prompt_ids": pad(prompts, pad_id, "left").to(device),  # [B, P]
            "prompt_mask": pad([torch.ones_like(p) for p in prompts], 0, "left").to(device),  # [B, P]
            "completion_ids": pad(completions, pad_id, "right").to(device),  # [B, C]
            "completion_mask": completion_mask,
            "num_items_in_batch": self.accelerator.gather(completion_mask.sum()).sum(),
        }


def build_warmup_config(
    section: WarmupSection, spec: StageSpec, out_dir: Path, num_rows: int, facts: DeviceFacts | None = None
) -> DistillationConfig | SFTConfig:
    """Our warmup section mapped onto TRL's DistillationConfig (forward KL: beta=0, T=1) or
    SFTConfig: `batch_size` sequences over all processes per optimizer step (`facts`: the hardware,
    detected when not given)."""
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
    }
    if section.objective == "sft":
        return SFTConfig(**args, max_length=section.max_length, completion_only_loss=True)
    return DistillationConfig(**args, beta=0.0, temperature=1.0, max_completion_length=section.max_length)


def build_trainer(
    section: WarmupSection, spec: StageSpec, out_dir: Path, student, teacher, tokenizer, rows, args=None
):
    """Forward KL or SFT on the teacher sequences (already cut to `max_length`): the only place
    our names meet TRL's."""
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
        [{"prompt_ids": r["prompt_ids"], "completion_ids": r["completion_ids"]} for r in rows]
    )
    bound_divergence_tiles()
    return TeacherSequenceTrainer(
        model=student,
        teacher_model=teacher,
        args=args,
        train_dataset=data,
        processing_class=tokenizer,
        callbacks=callbacks,
    )


def prepared_teacher(trainer, teacher):
    """The teacher as the trainer runs it: the forward-KL trainer prepares its own; for SFT it is
    prepared the way TRL prepares a frozen model (a DeepSpeed engine under ZeRO-3, whose partitioned
    weights are unusable without one)."""
    if getattr(trainer, "teacher_model", None) is not None:
        return trainer.teacher_model
    if trainer.is_deepspeed_enabled:
        from trl.models import prepare_deepspeed

        return prepare_deepspeed(teacher, trainer.accelerator)
    return trainer.accelerator.prepare_model(teacher, evaluation_mode=True)


def run_warmup(spec: StageSpec, out_dir: Path) -> StageOutput:
    section = spec.inputs_of(WarmupInputs).warmup
    tokenizer = load_tokenizer(spec, "student")
    check_tokenizers(load_tokenizer(spec, "teacher"), tokenizer)
    rollouts = spec.upstream_path("rollouts") / "rollouts"
    rows, heldout = load_records(rollouts / "train.jsonl"), load_records(rollouts / "heldout.jsonl")
    rows, truncated, dropped = fit_to_max_length(rows, section.max_length)
    args = build_warmup_config(section, spec, out_dir, len(rows))  # first: under ZeRO-3 it shards the loading
    student, teacher = load_model(spec, "student", trainable=True), load_model(spec, "teacher")
    trainer = build_trainer(section, spec, out_dir, student, teacher, tokenizer, rows, args)
    scorer = prepared_teacher(trainer, teacher)
    pairs = [(r["prompt_ids"], r["completion_ids"]) for r in heldout]

    def divergence() -> dict[str, float]:
        return measure_divergence(scorer, trainer.model_wrapped, pairs, tokenizer.pad_token_id)

    before = MeasureBeforeTraining(divergence, out_dir / CHECKPOINTS / BEFORE)
    trainer.add_callback(before)
    trainer.train(resume_from_checkpoint=latest_checkpoint(out_dir))
    save_trained(trainer, tokenizer, out_dir)
    after = divergence()  # after the save: a failure here loses no training (a rerun resumes at the end)
    return StageOutput(
        metrics={
            "forward_kl_before": before.result["forward_kl"],
            "forward_kl_after": after["forward_kl"],
            "reverse_kl_before": before.result["reverse_kl"],
            "reverse_kl_after": after["reverse_kl"],
            "train_loss": logged_mean_loss(trainer.state.log_history),
            "truncated_sequences": float(truncated),
            "dropped_sequences": float(dropped),
        }
    )


def main() -> None:
    run_stage(Stage.WARMUP, run_warmup)


if __name__ == "__main__":
    main()
