"""Which trainer checkpoints a relaunched stage trusts: real checkpoints of a tiny Trainer run, each
damaged the way a full disk, a kill or a power loss during the save leaves it, must be named and
skipped for the previous complete one; valid FSDP and DeepSpeed layouts must still be accepted; a
save torn by the fault switch resumes from the checkpoint before it to the uninterrupted result."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from sparse2dense.stages.resume import (
    FaultInjector,
    InjectedFault,
    ResumeCallback,
    checkpoint_problem,
    latest_checkpoint,
    resume_point,
)

STEPS, EVERY = 4, 2


def _train(
    out_dir: Path, fault: str = "", resume: bool = False, keep: int | None = None
) -> tuple[dict, list[int]]:
    """A tiny Llama trained STEPS steps with a checkpoint every EVERY, as the stages set it up
    (checkpoints in `out_dir/checkpoints`, the ResumeCallback); returns its final weights and the
    steps this call trained."""
    from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainerCallback, TrainingArguments

    trained = []

    class Steps(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            trained.append(state.global_step)

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=16,
        hidden_size=8,
        intermediate_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=16,
    )
    model = LlamaForCausalLM(config)
    rows = [{"input_ids": [i % 16, (i + 1) % 16, (i + 3) % 16]} for i in range(16)]
    rows = [r | {"labels": r["input_ids"]} for r in rows]
    args = TrainingArguments(
        output_dir=str(out_dir / "checkpoints"),
        max_steps=STEPS,
        save_strategy="steps",
        save_steps=EVERY,
        save_total_limit=keep,
        per_device_train_batch_size=2,
        learning_rate=1e-2,
        logging_steps=1,
        seed=0,
        data_seed=0,
        use_cpu=True,
        report_to=[],
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    injector = FaultInjector("tiny", "base", out_dir, env=fault)
    trainer = Trainer(model, args=args, train_dataset=rows, callbacks=[ResumeCallback(injector), Steps()])
    trainer.train(resume_from_checkpoint=latest_checkpoint(out_dir) if resume else None)
    return {k: v.clone() for k, v in model.state_dict().items()}, trained


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """(final weights, the run's directory) of an uninterrupted run that keeps every checkpoint."""
    out_dir = tmp_path_factory.mktemp("uninterrupted")
    weights, trained = _train(out_dir)
    assert trained == [1, 2, 3, 4]
    return weights, out_dir


def _two_checkpoints(uninterrupted, tmp_path: Path) -> tuple[Path, Path]:
    """Copies of the uninterrupted run's real checkpoint-2 and checkpoint-4."""
    _, source = uninterrupted
    shutil.copytree(source / "checkpoints", tmp_path / "checkpoints")
    root = tmp_path / "checkpoints"
    return root / "checkpoint-2", root / "checkpoint-4"


def _cut(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


DAMAGE = {
    "trainer_state cut in half": (lambda c: _cut(c / "trainer_state.json"), "unreadable trainer_state.json"),
    "trainer_state of another step": (
        lambda c: shutil.copy(c.parent / "checkpoint-2" / "trainer_state.json", c / "trainer_state.json"),
        "trainer_state.json is of step 2, not 4",
    ),
    "no trainer_state": (lambda c: (c / "trainer_state.json").unlink(), "no trainer_state.json"),
    "weights cut in half": (
        lambda c: _cut(c / "model.safetensors"),
        "model.safetensors: unreadable safetensors",
    ),
    "weights empty": (lambda c: (c / "model.safetensors").write_bytes(b""), "model.safetensors: empty"),
    "optimizer cut in half": (lambda c: _cut(c / "optimizer.pt"), "optimizer.pt: cut off"),
    "no scheduler": (lambda c: (c / "scheduler.pt").unlink(), "no scheduler state file"),
    "rng state empty": (lambda c: (c / "rng_state.pth").write_bytes(b""), "rng_state.pth: empty"),
    "no weights": (lambda c: (c / "model.safetensors").unlink(), "no weights file"),
}


def test_the_checkpoints_of_a_real_run_are_complete(uninterrupted, tmp_path):
    older, newest = _two_checkpoints(uninterrupted, tmp_path)
    assert checkpoint_problem(older) is None and checkpoint_problem(newest) is None
    assert resume_point(tmp_path) == (4, "resuming from checkpoint-4")


@pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
def test_a_damaged_newest_checkpoint_is_named_and_the_previous_one_resumed(uninterrupted, tmp_path, damage):
    older, newest = _two_checkpoints(uninterrupted, tmp_path)
    harm, reason = DAMAGE[damage]
    harm(newest)
    step, what = resume_point(tmp_path)
    assert step == 2, what
    assert what.startswith("resuming from checkpoint-2 (skipped and removed damaged checkpoint-4 (")
    assert reason in what
    assert not newest.exists() and older.is_dir()  # rewritten when training gets there again
    assert latest_checkpoint(tmp_path) == str(older)


def test_with_every_checkpoint_damaged_the_stage_starts_over_and_says_so(uninterrupted, tmp_path):
    older, newest = _two_checkpoints(uninterrupted, tmp_path)
    _cut(older / "trainer_state.json")
    _cut(newest / "optimizer.pt")
    step, what = resume_point(tmp_path)
    assert step is None
    assert what.startswith("starting over (skipped and removed damaged checkpoint-4 (optimizer.pt: cut off")
    assert "; checkpoint-2 (unreadable trainer_state.json" in what
    assert latest_checkpoint(tmp_path) is None


def _save(path: Path, payload=None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload if payload is not None else {"x": torch.zeros(2)}, path)


def _distributed(tmp_path: Path, shape: str) -> Path:
    """A checkpoint-4 laid out as accelerate's FSDP (sharded state dict, two processes) or
    DeepSpeed (ZeRO, model and optimizer in global_step4/) writes it, from real file formats."""
    checkpoint = tmp_path / "checkpoints" / "checkpoint-4"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": 4}))
    (checkpoint / "config.json").write_text("{}")
    for rank in (0, 1):
        _save(checkpoint / f"rng_state_{rank}.pth")
    if shape == "fsdp":
        for folder in ("pytorch_model_fsdp_0", "optimizer_0"):
            (checkpoint / folder).mkdir()
            for rank in (0, 1):
                (checkpoint / folder / f"__{rank}_0.distcp").write_bytes(b"shard")
            (checkpoint / folder / ".metadata").write_bytes(b"metadata")
        _save(checkpoint / "scheduler.pt")
    else:
        step_dir = checkpoint / "global_step4"
        _save(step_dir / "mp_rank_00_model_states.pt")
        for rank in (0, 1):
            _save(step_dir / f"bf16_zero_pp_rank_{rank}_mp_rank_00_optim_states.pt")
        (checkpoint / "latest").write_text("global_step4")
    return checkpoint


@pytest.mark.parametrize("shape", ["fsdp", "deepspeed"])
def test_fsdp_and_deepspeed_checkpoints_are_accepted_and_their_damage_found(tmp_path, shape):
    checkpoint = _distributed(tmp_path, shape)
    assert checkpoint_problem(checkpoint) is None
    if shape == "fsdp":
        (checkpoint / "optimizer_0" / ".metadata").unlink()  # a save that died before its metadata
        assert checkpoint_problem(checkpoint) == "optimizer_0: distributed checkpoint without its .metadata"
    else:
        _cut(checkpoint / "global_step4" / "bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt")
        assert "bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt: cut off" in checkpoint_problem(checkpoint)


def test_a_missing_rank_of_the_rng_states_is_found(tmp_path):
    checkpoint = _distributed(tmp_path, "fsdp")
    (checkpoint / "rng_state_0.pth").unlink()
    assert checkpoint_problem(checkpoint) == "rng states of ranks [1], not 0..0"


def test_a_save_torn_in_trainer_state_resumes_from_the_previous_checkpoint(uninterrupted, tmp_path):
    """The fault switch tears checkpoint-4's trainer_state.json halfway, after its weights, optimizer,
    scheduler and RNG states and before the Trainer rotates checkpoint-2 away (save_total_limit=1):
    the rerun skips checkpoint-4, resumes from checkpoint-2 and ends where the uninterrupted run did."""
    expected, _ = uninterrupted
    with pytest.raises(InjectedFault, match="injected failure of tiny at step 4"):
        _train(tmp_path, fault="tiny:4:torn", keep=1)
    newest = tmp_path / "checkpoints" / "checkpoint-4"
    text = (newest / "trainer_state.json").read_text()
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)
    assert (newest / "optimizer.pt").is_file() and (newest / "rng_state.pth").is_file()
    assert (tmp_path / "checkpoints" / "checkpoint-2" / "trainer_state.json").is_file()

    step, what = resume_point(tmp_path)
    assert step == 2 and "skipped and removed damaged checkpoint-4 (unreadable trainer_state.json" in what
    resumed, trained = _train(tmp_path, fault="tiny:4:torn", resume=True, keep=1)  # fires once only
    assert trained == [3, 4]
    assert resumed.keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.equal(resumed[name], tensor), name
