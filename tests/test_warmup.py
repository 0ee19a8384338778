"""warmup: the forward-KL loss on TRL's chunked kernel equals the plain full-vocabulary KL, sequences
are cut to `warmup.max_length`, the "after" measurement comes after the trained model is saved, and
the held-out forward KL falls by several standard errors (sequences as the units)."""

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from sparse2dense.losses import compute_forward_kl
from sparse2dense.sections import ToyArchitecture, WarmupSection
from sparse2dense.spec import StageSpec
from sparse2dense.stages import Stage
from sparse2dense.stages import warmup as warmup_stage
from sparse2dense.stages.resume import resume_point
from sparse2dense.stages.warmup import TeacherSequenceTrainer, fit_to_max_length, run_warmup
from sparse2dense.store import StageResult
from sparse2dense.toy import build_model, build_tokenizer
from tests.effects import MARGIN, divergence_fall


def _rows(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n):
        prompt = torch.randint(3, 90, (4 + i % 3,), generator=g).tolist()
        completion = torch.randint(3, 90, (6 + 2 * (i % 5),), generator=g).tolist()
        rows.append({"prompt": "p", "prompt_ids": prompt, "completion_ids": completion})
    return rows


def test_fit_to_max_length_cuts_completions_and_drops_rows_without_room():
    rows = [
        {"prompt_ids": [1, 2], "completion_ids": [3, 4]},  # fits
        {"prompt_ids": [1, 2, 3], "completion_ids": [4, 5, 6, 7]},  # cut to 1 completion token
        {"prompt_ids": [1, 2, 3, 4], "completion_ids": [5]},  # no room: dropped
    ]
    fitted, truncated, dropped = fit_to_max_length(rows, 4)
    assert [r["completion_ids"] for r in fitted] == [[3, 4], [4]]
    assert (truncated, dropped) == (1, 1)
    assert all(len(r["prompt_ids"]) + len(r["completion_ids"]) <= 4 for r in fitted)
    with pytest.raises(ValueError, match="warmup.max_length=2"):
        fit_to_max_length(rows, 2)


def _models():
    tokenizer = build_tokenizer()
    teacher = build_model(ToyArchitecture(hidden_size=32, intermediate_size=64), tokenizer, seed=0)
    student = build_model(
        ToyArchitecture(hidden_size=16, intermediate_size=32, num_hidden_layers=1), tokenizer, 1
    )
    return tokenizer, teacher, student


def _spec(tmp_path, **warmup):
    section = {"batch_size": 8, "learning_rate": 1e-2, "checkpoint_every": 1, "logging_steps": 1} | warmup
    return StageSpec(
        stage=Stage.WARMUP,
        name="warmup",
        key="test",
        config={"warmup": WarmupSection.model_validate(section).model_dump(mode="json")},
        semantic_config={},
        output_dir=str(tmp_path / "warmup"),
        seed=0,
    )


def test_chunked_forward_kl_loss_and_gradient_equal_the_full_vocabulary_ones(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    tokenizer, teacher, student = _models()
    spec, rows = _spec(tmp_path), _rows(4)
    trainer = warmup_stage.build_trainer(
        WarmupSection(batch_size=4), spec, tmp_path / "warmup", student, teacher, tokenizer, rows
    )
    assert isinstance(trainer, TeacherSequenceTrainer) and trainer.beta == 0.0
    inputs = trainer._generate_and_score_completions(rows)
    loss = trainer.compute_loss(trainer.model, inputs)
    chunked_grad = torch.autograd.grad(loss, trainer.model.model.layers[0].mlp.up_proj.weight)[0]

    ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1)
    attn = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)
    width = inputs["completion_ids"].shape[1]
    with torch.no_grad():
        t_logits = teacher(input_ids=ids, attention_mask=attn).logits[:, -width - 1 : -1]  # [B, C, V]
    s_logits = trainer.model(input_ids=ids, attention_mask=attn).logits[:, -width - 1 : -1]
    plain = compute_forward_kl(t_logits, s_logits, inputs["completion_mask"])  # token mean, full vocabulary
    plain_grad = torch.autograd.grad(plain, trainer.model.model.layers[0].mlp.up_proj.weight)[0]
    assert loss.item() == pytest.approx(plain.item(), rel=1e-4) and loss.item() > 0
    assert torch.allclose(chunked_grad, plain_grad, rtol=1e-3, atol=1e-6)


def _stage_inputs(tmp_path, tokenizer, teacher, student):
    for name, model in (("teacher", teacher), ("student", student)):
        model.save_pretrained(tmp_path / name)
        tokenizer.save_pretrained(tmp_path / name)
    rollouts = tmp_path / "rollouts"
    (rollouts / "rollouts").mkdir(parents=True)
    # 32 held-out sequences: enough units for the KL's fall to be measured against its error.
    for split, rows in (("train", _rows(16)), ("heldout", _rows(32, seed=1))):
        (rollouts / "rollouts" / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    upstream = StageResult(
        stage="teacher_rollouts", name="rollouts", key="r", path=str(rollouts), manifest_digest="d"
    )
    models = {role: {"name_or_path": str(tmp_path / role)} for role in ("teacher", "student")}
    return upstream, models


def test_after_measurement_follows_the_save_and_a_rerun_does_not_train_again(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    tokenizer, teacher, student = _models()
    upstream, models = _stage_inputs(tmp_path, tokenizer, teacher, student)
    base = _spec(tmp_path, max_length=12)
    spec = base.model_copy(
        update={"config": base.config | {"models": models}, "upstream": {"rollouts": upstream}}
    )
    out = tmp_path / "warmup"
    measured, widths, real = [], [], warmup_stage.measure_divergence

    def measure(*args, **kwargs):
        measured.append(1)
        if len(measured) == 2:  # the "after" measurement of the first launch
            raise RuntimeError("out of memory")
        return real(*args, **kwargs)

    generate = TeacherSequenceTrainer._generate_and_score_completions

    def batches(self, inputs):
        batch = generate(self, inputs)
        widths.append(int((batch["prompt_mask"].sum(1) + batch["completion_mask"].sum(1)).max()))
        return batch

    monkeypatch.setattr(warmup_stage, "measure_divergence", measure)
    monkeypatch.setattr(TeacherSequenceTrainer, "_generate_and_score_completions", batches)
    with pytest.raises(RuntimeError, match="out of memory"):
        run_warmup(spec, out)
    assert (out / "model" / "model.safetensors").is_file()  # saved before "after" ran
    assert resume_point(out)[0] == 2  # the last step is checkpointed
    assert widths and max(widths) == 12  # no sequence longer than warmup.max_length (uncut: up to 20)
    trained = len(widths)

    output = run_warmup(spec, out)  # the rerun: resumes at the last step, trains nothing
    assert len(widths) == trained
    assert len(measured) == 3  # only "after": "before" was kept from the first launch
    metrics = output.metrics
    assert metrics["truncated_sequences"] > 0 and metrics["dropped_sequences"] == 0
    # The KL's fall, re-measured sequence by sequence from the saved models: the stage's numbers,
    # and a fall of several standard errors.
    lines = (Path(upstream.path) / "rollouts" / "heldout.jsonl").read_text().splitlines()
    pairs = [(r["prompt_ids"], r["completion_ids"]) for r in map(json.loads, lines)]
    warmed = AutoModelForCausalLM.from_pretrained(out / "model")
    effect, kl = divergence_fall(teacher, student, warmed, pairs, tokenizer.pad_token_id, "forward_kl")
    assert kl["before"] == pytest.approx(metrics["forward_kl_before"], rel=1e-4)
    assert kl["after"] == pytest.approx(metrics["forward_kl_after"], rel=1e-4)
    assert effect.margin >= MARGIN, str(effect)


def test_sft_objective_still_trains_and_measures(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    tokenizer, teacher, student = _models()
    upstream, models = _stage_inputs(tmp_path, tokenizer, teacher, student)
    base = _spec(tmp_path, objective="sft", max_length=12)
    spec = base.model_copy(
        update={"config": base.config | {"models": models}, "upstream": {"rollouts": upstream}}
    )
    metrics = run_warmup(spec, tmp_path / "warmup").metrics
    assert (tmp_path / "warmup" / "model" / "model.safetensors").is_file()
    assert metrics["forward_kl_before"] > 0 and metrics["forward_kl_after"] > 0
    assert metrics["truncated_sequences"] > 0 and metrics["train_loss"] > 0
