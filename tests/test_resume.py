"""Resuming inside a stage: fault injection, an outside SIGKILL, sharded generation.

One module-scoped uninterrupted run of a lean toy pipeline is the reference. Each flow test then
removes the stage directories it is about to interrupt (upstream stays cached), makes the stage die
after its first checkpoint or shard, lets the pipeline resume (a rerun, or the task's own retry),
and checks that the result equals the reference exactly: same model files, same metrics, same
manifest digest.
"""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from sparse2dense.config import load_config
from sparse2dense.pipeline import plan_keys
from sparse2dense.stages.resume import (
    FAULT_MARKER,
    FaultPoint,
    InjectedFault,
    ShardedGeneration,
    latest_checkpoint,
    logged_mean_loss,
    parse_fault_points,
    resume_point,
)
from sparse2dense.store import MANIFEST, manifest_digest, read_manifest, stage_dir
from tests.conftest import MICRO, ROOT, TOY
from tests.observe import finished_task_runs, processes_running

# The smallest pipeline with an opd stage: no teacher RL, no warmup, short base training. opd takes
# 4 steps with a checkpoint every 2; eval has 2 shards of 8 problems.
LEAN = [
    "teacher_rl.enabled=false",
    "warmup.enabled=false",
    "base.teacher_steps=10",
    "base.student_steps=10",
    "opd.checkpoint_every=2",
    "eval.batch_size=8",
]


# ---- units ----------------------------------------------------------------------------------------


def test_fault_points_parse_targets_steps_and_modes():
    assert parse_fault_points("opd:3") == [FaultPoint("opd", 3)]
    assert parse_fault_points("eval/student_final:1:kill, base:5:raise") == [
        FaultPoint("eval/student_final", 1, "kill"),
        FaultPoint("base", 5, "raise"),
    ]
    assert parse_fault_points("opd:4:torn") == [FaultPoint("opd", 4, "torn")]
    assert parse_fault_points("") == []
    for bad in ("opd", "opd:0", "opd:x", ":3", "opd:3:explode"):
        with pytest.raises(ValueError, match="S2D_FAIL_AT"):
            parse_fault_points(bad)


def _checkpoint(root: Path, step: int, state: bool = True) -> None:
    """A complete single-process Trainer checkpoint of `step` (tiny files of the real formats)."""
    import torch
    from safetensors.torch import save_file

    path = root / f"checkpoint-{step}"
    path.mkdir(parents=True)
    save_file({"w": torch.zeros(2)}, path / "model.safetensors")
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):
        torch.save({"x": step}, path / name)
    if state:
        (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))


def test_latest_checkpoint_skips_and_removes_incomplete_ones(tmp_path):
    root = tmp_path / "checkpoints"
    for step in (2, 4):
        _checkpoint(root, step)
    _checkpoint(root, 10, state=False)
    assert latest_checkpoint(tmp_path) == str(root / "checkpoint-4")
    assert not (root / "checkpoint-10").exists()  # killed mid-save: rewritten when reached again
    assert resume_point(tmp_path) == (4, "resuming from checkpoint-4")
    assert resume_point(tmp_path / "fresh") == (None, None)


def test_logged_mean_loss_weights_each_log_by_its_steps():
    history = [{"loss": 1.0, "step": 2}, {"learning_rate": 0.1, "step": 2}, {"loss": 4.0, "step": 3}]
    assert logged_mean_loss(history) == pytest.approx((1.0 * 2 + 4.0) / 3)
    assert math.isnan(logged_mean_loss([]))


def test_sharded_generation_keeps_finished_shards_and_fails_once(tmp_path, monkeypatch):
    calls = []

    def produce(index, items):
        calls.append(index)
        return [{"item": x, "shard": index} for x in items]

    items = list(range(10))
    expected = ShardedGeneration("eval/x", "eval", tmp_path / "a").run("bench", items, 4, produce)
    assert calls == [0, 1, 2] and [r["item"] for r in expected] == items

    calls.clear()
    monkeypatch.setenv("S2D_FAIL_AT", "eval:2")
    out_dir = tmp_path / "b"
    with pytest.raises(InjectedFault):
        ShardedGeneration("eval/x", "eval", out_dir).run("bench", items, 4, produce)
    assert calls == [0, 1] and (out_dir / "checkpoints" / FAULT_MARKER).is_file()
    calls.clear()
    resumed = ShardedGeneration("eval/x", "eval", out_dir).run("bench", items, 4, produce)
    assert calls == [2]  # shards 0 and 1 were read back; the switch fired once only
    assert resumed == expected
    assert resume_point(out_dir) == (3, "resuming with 3 finished shard(s)")


# ---- flows ------------------------------------------------------------------------------------------


def _config(workdir: Path):
    paths = [f"store_dir={workdir / 'store'}", f"runs_dir={workdir / 'runs'}"]
    return load_config(TOY, [*MICRO, *LEAN, *paths])


def _run(workdir: Path):
    from flows.post_train import post_train

    return post_train(_config(workdir))


def _stage_dir(workdir: Path, name: str) -> Path:
    cfg = _config(workdir)
    return stage_dir(Path(cfg.store_dir), name.split("/")[0], plan_keys(cfg)[name])


def _snapshot(stage_path: Path) -> dict:
    """What must not change when a stage resumes: its manifest digest, files and metrics."""
    manifest = read_manifest(stage_path)
    return {"digest": manifest_digest(stage_path), "files": manifest["files"], "metrics": manifest["metrics"]}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("resume")


@pytest.fixture(scope="module")
def reference(prefect_server, workdir):
    summary = _run(workdir)
    assert {e["resumed_from_step"] for e in summary["stages"].values()} == {None}
    return {name: _snapshot(Path(e["path"])) for name, e in summary["stages"].items()}


def _forget(workdir: Path, *names: str) -> None:
    for name in names:  # an earlier test that failed half-way may have left it missing
        shutil.rmtree(_stage_dir(workdir, name), ignore_errors=True)


def _assert_same_as_reference(summary: dict, reference: dict, *names: str) -> None:
    for name in names:
        assert _snapshot(Path(summary["stages"][name]["path"])) == reference[name], name


def test_injected_crash_then_rerun_resumes_opd_from_its_checkpoint(reference, workdir, monkeypatch):
    _forget(workdir, "opd", "eval/student_final")
    opd_dir = _stage_dir(workdir, "opd")
    monkeypatch.setenv("S2D_TASK_RETRIES", "0")
    monkeypatch.setenv("S2D_FAIL_AT", "opd:3")  # the first checkpoint is at step 2
    with pytest.raises(Exception, match="stage opd exited"):
        _run(workdir)
    assert not (opd_dir / MANIFEST).exists()
    assert latest_checkpoint(opd_dir).endswith("checkpoint-2")

    monkeypatch.delenv("S2D_FAIL_AT")
    again = _run(workdir)
    statuses = {name: e["status"] for name, e in again["stages"].items()}
    assert statuses.pop("opd") == statuses.pop("eval/student_final") == "computed"
    assert set(statuses.values()) == {"cached"}
    opd = json.loads(Path(again["summary_path"]).read_text())["stages"]["opd"]
    assert opd["resumed_from_step"] == 2
    assert not (opd_dir / "checkpoints").exists()
    _assert_same_as_reference(again, reference, "opd", "eval/student_final")
    # the resumed run's training curve continues at step 3 instead of starting over
    client = MlflowClient(again["mlflow"]["tracking_uri"])
    assert [m.step for m in client.get_metric_history(opd["mlflow_run_id"], "loss")] == [3, 4]


def _opd_log(workdir: Path) -> Path:
    return workdir / "store" / "_logs" / "opd" / f"{_stage_dir(workdir, 'opd').name}.log"


def _read_from(path: Path, offset: int) -> str:
    with open(path) as fh:
        fh.seek(offset)
        return fh.read()


@pytest.mark.slow
def test_a_save_torn_in_trainer_state_resumes_from_the_checkpoint_before(reference, workdir, monkeypatch):
    """A full disk or a power loss halfway through writing checkpoint-4's trainer_state.json (after
    its weights and optimizer, before checkpoint-2 is rotated away): the rerun names checkpoint-4,
    skips it, resumes from checkpoint-2 and ends exactly where the uninterrupted run did."""
    _forget(workdir, "opd", "eval/student_final")
    opd_dir = _stage_dir(workdir, "opd")
    earlier = _opd_log(workdir).stat().st_size
    monkeypatch.setenv("S2D_TASK_RETRIES", "0")
    monkeypatch.setenv("S2D_FAIL_AT", "opd:4:torn")  # checkpoints at steps 2 and 4
    with pytest.raises(Exception, match="stage opd exited"):
        _run(workdir)
    torn = opd_dir / "checkpoints" / "checkpoint-4" / "trainer_state.json"
    with pytest.raises(json.JSONDecodeError):
        json.loads(torn.read_text())
    assert (opd_dir / "checkpoints" / "checkpoint-2" / "trainer_state.json").is_file()

    monkeypatch.delenv("S2D_FAIL_AT")
    again = _run(workdir)
    opd = json.loads(Path(again["summary_path"]).read_text())["stages"]["opd"]
    assert opd["status"] == "computed" and opd["resumed_from_step"] == 2
    log = _read_from(_opd_log(workdir), earlier)
    assert "[opd] resuming from checkpoint-2 (skipped and removed damaged checkpoint-4 (unreadable" in log
    _assert_same_as_reference(again, reference, "opd", "eval/student_final")


@pytest.mark.slow
def test_a_cut_only_checkpoint_makes_the_rerun_start_over(reference, workdir, monkeypatch):
    """The only checkpoint's trainer_state.json cut in half after a crash: the rerun names it and
    trains from step 1 instead of failing on every retry, to the uninterrupted run's result."""
    _forget(workdir, "opd", "eval/student_final")
    opd_dir = _stage_dir(workdir, "opd")
    monkeypatch.setenv("S2D_TASK_RETRIES", "0")
    monkeypatch.setenv("S2D_FAIL_AT", "opd:3")
    with pytest.raises(Exception, match="stage opd exited"):
        _run(workdir)
    state = opd_dir / "checkpoints" / "checkpoint-2" / "trainer_state.json"
    text = state.read_text()
    state.write_text(text[: len(text) // 2])

    monkeypatch.delenv("S2D_FAIL_AT")
    earlier = _opd_log(workdir).stat().st_size
    again = _run(workdir)
    opd = json.loads(Path(again["summary_path"]).read_text())["stages"]["opd"]
    assert opd["status"] == "computed" and opd["resumed_from_step"] is None
    log = _read_from(_opd_log(workdir), earlier)
    assert (
        "[opd] starting over (skipped and removed damaged checkpoint-2 (unreadable trainer_state.json" in log
    )
    client = MlflowClient(again["mlflow"]["tracking_uri"])
    assert [m.step for m in client.get_metric_history(opd["mlflow_run_id"], "loss")] == [1, 2, 3, 4]
    assert again["stages"]["eval/student_final"]["status"] == "computed"
    _assert_same_as_reference(again, reference, "opd", "eval/student_final")


# Slow (a whole pipeline run in a subprocess); a stage SIGKILLed from outside and resumed by the task's
# retry runs in the default suite in tests/test_sweep.py (micro_sweep), an eval killed and retried below.
@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="finds the stage process in /proc")
def test_sigkill_from_outside_is_resumed_by_the_task_retry(reference, workdir):
    from prefect.settings import PREFECT_API_URL

    _forget(workdir, "opd", "eval/student_final")
    opd_dir = _stage_dir(workdir, "opd")
    paths = [f"store_dir={workdir / 'store'}", f"runs_dir={workdir / 'runs'}"]
    sets = [arg for item in [*MICRO, *LEAN, *paths] for arg in ("--set", item)]
    env = dict(os.environ, PREFECT_API_URL=PREFECT_API_URL.value())
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.pop("S2D_FAIL_AT", None)
    env.pop("S2D_TASK_RETRIES", None)  # the default: one retry
    cmd = [sys.executable, "-m", "flows.cli", "run", str(TOY), *sets]
    with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as flow:
        deadline = time.monotonic() + 300
        while not (opd_dir / "checkpoints" / "checkpoint-2" / "trainer_state.json").is_file():
            assert flow.poll() is None and time.monotonic() < deadline, "opd never saved a checkpoint"
            time.sleep(0.1)
        (pid,) = processes_running("sparse2dense.stages.opd", opd_dir)
        os.kill(pid, signal.SIGKILL)
        killed_at = int(Path(latest_checkpoint(opd_dir)).name.split("-")[1])
        output, _ = flow.communicate(timeout=600)
    assert flow.returncode == 0, output[-3000:]
    summary_path = output.rsplit("summary: ", 1)[1].split()[0]
    summary = json.loads(Path(summary_path).read_text())
    assert summary["stages"]["opd"]["status"] == "computed"
    assert summary["stages"]["opd"]["resumed_from_step"] == killed_at >= 2
    assert "exited with -9" in output
    assert _task_run_counts(summary["flow_run_id"])["opd"] == 2  # killed, then retried in the same flow run
    _assert_same_as_reference(summary, reference, "opd", "eval/student_final")


def test_eval_killed_after_a_shard_keeps_it_on_retry(reference, workdir, monkeypatch):
    _forget(workdir, "eval/student_final")
    log_path = workdir / "store" / "_logs" / "eval" / f"{_stage_dir(workdir, 'eval/student_final').name}.log"
    earlier = log_path.stat().st_size
    monkeypatch.setenv("S2D_FAIL_AT", "eval/student_final:1:kill")
    summary = _run(workdir)  # the task's retry resumes it in the same flow run
    entry = summary["stages"]["eval/student_final"]
    assert entry["status"] == "computed" and entry["resumed_from_step"] == 1
    with open(log_path) as fh:
        fh.seek(earlier)
        log = fh.read()  # both attempts of this run
    assert log.count("shard toy_test/00000: written") == 1
    assert log.count("shard toy_test/00000: finished earlier, kept") == 1
    assert log.count("shard toy_test/00001: written") == 1
    _assert_same_as_reference(summary, reference, "eval/student_final")
    assert summary["eval"]["student_final"]["toy_test"]["num_problems"] == 16
    assert _task_run_counts(summary["flow_run_id"])["eval/student_final"] == 2  # one flow run, two attempts


def _task_run_counts(flow_run_id: str) -> dict[str, int]:
    """Attempts per task run of a finished flow run."""
    runs = finished_task_runs(flow_run_id)
    # a stage whose stored result was removed shows a `Cached` lookup before its real run
    return {t.name: max(r.run_count for r in runs if r.name == t.name) for t in runs}
