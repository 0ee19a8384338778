"""base (toy world only): create a tiny Qwen3 model from config and pre-train it briefly.

Stands in for the pre-training a real teacher and student already have: TRL `SFTTrainer` on worked
solutions of the toy `base` split, so both models start with non-zero accuracy and the teacher
(bigger, trained longer) ahead. Writes `model/` (safetensors + the locally built tokenizer).

    python -m sparse2dense.stages.base SPEC.json
"""

from __future__ import annotations

from pathlib import Path

from datasets import Dataset
from trl import SFTConfig, SFTTrainer

from sparse2dense.data import load_records
from sparse2dense.graph import BaseInputs, Stage
from sparse2dense.launch import DeviceFacts, batch_fields
from sparse2dense.models import save_trained
from sparse2dense.prompts import render_prompts
from sparse2dense.sections import BaseTraining
from sparse2dense.spec import StageSpec
from sparse2dense.stages.program import (
    StageOutput,
    latest_checkpoint,
    logged_mean_loss,
    run_stage,
    training_args,
    training_callbacks,
)
from sparse2dense.toy import build_model, build_tokenizer, difficulty_of


def build_sft_config(
    train: BaseTraining, spec: StageSpec, out_dir: Path, facts: DeviceFacts | None = None
) -> SFTConfig:
    """Our base-section names mapped onto TRL's SFTConfig: `batch_size` sequences over all processes
    per optimizer step (`facts`: the hardware, detected when not given)."""
    facts = facts or DeviceFacts.detect()
    memory = train.memory
    save_steps = max(train.steps // 2, 1)
    return SFTConfig(
        **training_args(spec, out_dir, train.logging_steps, save_steps, memory, facts),
        **batch_fields(train.batch_size, memory, facts, f"{spec.name}.memory"),
        max_steps=train.steps,
        learning_rate=train.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=max(train.steps // 20, 1),
        weight_decay=0.0,
        completion_only_loss=True,
        max_length=None,
    )


def pretraining_text(records: list[dict], train: BaseTraining) -> list[dict]:
    """The base split, cut to sums of at most `train.max_terms` terms when given (the student's
    narrower pre-training text, `base.student_max_terms`)."""
    if train.max_terms is None:
        return records
    return [r for r in records if difficulty_of(r["problem"]) <= train.max_terms]


def run_base(spec: StageSpec, out_dir: Path) -> StageOutput:
    inputs = spec.inputs_of(BaseInputs)
    train, prompt, arch = inputs.train, inputs.prompt, inputs.models["policy"].toy
    tokenizer = build_tokenizer()
    model = build_model(arch, tokenizer, spec.seed)
    records = pretraining_text(load_records(spec.upstream_path("data") / "splits/base.jsonl"), train)
    prompts = render_prompts(tokenizer, records, prompt)
    rows = [
        {"prompt": p, "completion": r["solution"] + tokenizer.eos_token}
        for p, r in zip(prompts, records, strict=True)
    ]
    trainer = SFTTrainer(
        model=model,
        args=build_sft_config(train, spec, out_dir),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        callbacks=training_callbacks(spec.name, str(spec.stage), out_dir),
    )
    trainer.train(resume_from_checkpoint=latest_checkpoint(out_dir))
    save_trained(trainer, tokenizer, out_dir)
    history = trainer.state.log_history
    losses = [h["loss"] for h in history if "loss" in h]
    return StageOutput(
        metrics={
            "train_loss": logged_mean_loss(history),
            "first_logged_loss": float(losses[0]) if losses else float("nan"),
            "last_logged_loss": float(losses[-1]) if losses else float("nan"),
            "params": float(sum(p.numel() for p in model.parameters())),
        }
    )


def main() -> None:
    run_stage(Stage.BASE, run_base)


if __name__ == "__main__":
    main()
