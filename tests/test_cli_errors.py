"""Bad input to `s2d` ends in one clear error naming what is wrong, never a traceback.

Most cases run the real command line in a subprocess (as a user would), so an uncaught exception
anywhere on the way would show as a traceback on stderr. Cases that the original command would
answer by starting a run call `main()` in-process with the server start replaced by a raise
(`no_server`): the input must be refused before it. A failed sweep and lost Prefect result records
are checked on real runs (a failing sweep, the session's micro run).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import MICRO, ROOT, TOY

TOY_SWEEP = ROOT / "configs" / "sweeps" / "toy-ablations.yaml"


def _s2d(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    full.pop("PREFECT_API_URL", None)
    full.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args],
        cwd=cwd,
        env=full | (env or {}),
        capture_output=True,
        text=True,
        timeout=300,
    )


def _clear(proc: subprocess.CompletedProcess, code: int, *expected: str) -> None:
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    for text in expected:
        assert text in proc.stderr, proc.stderr


def test_unknown_eval_set_fails_validation(tmp_path):
    proc = _s2d("validate", str(TOY), "--set", 'data.eval_sets=["nosuchset"]', cwd=tmp_path)
    _clear(proc, 2, "data.eval_sets:", "'nosuchset' is not a toy eval set", "toy_test")


def test_grade_reports_malformed_lines_and_keeps_the_rest(tmp_path):
    src = tmp_path / "preds.jsonl"
    good = {"id": "a", "gold": "3", "pred": r"\boxed{3}"}
    src.write_text(
        json.dumps(good) + '\n{"gold": "1", "pred": \n[1, 2]\n' + json.dumps(good | {"id": "b"}) + "\n"
    )
    proc = _s2d("grade", str(src), "--workers", "1", cwd=tmp_path)
    _clear(proc, 1, "2 malformed line(s)", "line 2: not valid JSON", "line 3: a JSON list, not an object")
    graded = [json.loads(line) for line in (tmp_path / "preds.graded.jsonl").read_text().splitlines()]
    assert [(r["id"], r["verdict"]) for r in graded] == [("a", "correct"), ("b", "correct")]
    assert "graded 2 records" in proc.stdout


def test_grade_of_a_missing_file_names_it(tmp_path):
    _clear(_s2d("grade", str(tmp_path / "nope.jsonl"), cwd=tmp_path), 2, "input file not found", "nope.jsonl")


def test_missing_model_path_is_named_before_any_server_starts(tmp_path):
    runs = tmp_path / "runs"
    proc = _s2d(
        "evaluate", str(TOY), "--set", f"runs_dir={runs}", "--model-path", "/nonexistent/model", cwd=tmp_path
    )
    _clear(proc, 2, "model path not found: /nonexistent/model")
    assert not (runs / "prefect").exists()  # the temporary Prefect server keeps its database there


def test_models_uri_without_a_registry_is_named(tmp_path):
    proc = _s2d(
        "evaluate",
        str(TOY),
        "--set",
        f"runs_dir={tmp_path / 'runs'}",
        "--model-path",
        "models:/toy-student/1",
        cwd=tmp_path,
    )
    _clear(proc, 2, "models:/toy-student/1: no MLflow store at sqlite:///")


def test_yaml_syntax_error_names_file_line_and_column(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("teacher:\n  toy: {}\nstudent:\n\ttoy: {}\n")
    _clear(_s2d("validate", str(bad), cwd=tmp_path), 2, f"config {bad} is not valid YAML: line 4, column 1")


class ServerStarted(Exception):
    """Raised in place of `prepare_environment`: the command got past its checks of the input."""


@pytest.fixture
def no_server(monkeypatch):
    """Run `main()` in-process with `prepare_environment` replaced by a raise, so a command that
    would start a Prefect server (and a run) stops there instead."""
    import flows.cli

    def refuse(cfg, **options):
        raise ServerStarted

    monkeypatch.setattr(flows.cli, "prepare_environment", refuse)
    return flows.cli.main


def test_force_typo_in_run_is_refused_with_the_planned_names(tmp_path, no_server, capsys):
    runs = tmp_path / "runs"
    args = ["run", str(TOY), "--set", f"runs_dir={runs}", "--force", "bogus_stage", "--force", "evl"]
    assert no_server(args) == 2
    err = capsys.readouterr().err
    assert "--force: no planned stage or stage kind 'bogus_stage', 'evl' (did you mean 'eval'?)" in err
    assert "eval/student_final" in err and "teacher_rollouts" in err
    assert not runs.exists()


def test_force_accepts_planned_names_and_kinds(tmp_path, no_server):
    paths = ["--set", f"runs_dir={tmp_path / 'runs'}", "--set", f"store_dir={tmp_path / 'store'}"]
    with pytest.raises(ServerStarted):
        no_server(["run", str(TOY), *paths, "--force", "eval", "--force", "eval/student_final"])
    with pytest.raises(ServerStarted):  # evaluate's plan names its evaluation eval/<role>
        no_server(["evaluate", str(TOY), *paths, "--role", "teacher", "--force", "eval/teacher"])


def test_force_in_evaluate_is_checked_against_its_own_plan(tmp_path):
    runs = tmp_path / "runs"
    # the force check comes first: the missing model path is not what stops the command
    args = ["--set", f"runs_dir={runs}", "--model-path", "/nonexistent/model"]
    proc = _s2d("evaluate", str(TOY), *args, "--force", "eval/student_final", cwd=tmp_path)
    _clear(proc, 2, "'eval/student_final' (did you mean 'eval/student'?)", "planned stages are data_prep")
    assert not (runs / "prefect").exists()


def test_force_typo_in_sweep_is_refused_even_for_the_plan(tmp_path):
    # an arm that plans student_rl makes it a valid name for the whole sweep
    proc = _s2d("sweep", str(TOY_SWEEP), "--plan", "--force", "student_rl", "--force", "opdd", cwd=tmp_path)
    _clear(proc, 2, "--force: no planned stage or stage kind 'opdd' (did you mean 'opd'?)")
    assert "'student_rl'" not in proc.stderr.split(";")[0]


@pytest.mark.parametrize("seed", ["-1", str(2**32)])
def test_seed_outside_numpys_range_fails_validation(tmp_path, seed):
    _clear(_s2d("validate", str(TOY), "--set", f"seed={seed}", cwd=tmp_path), 2, "seed: Input should be")


def test_largest_seed_is_valid(tmp_path):
    proc = _s2d("validate", str(TOY), "--set", f"seed={2**32 - 1}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr


def test_sweep_seeds_outside_the_range_are_refused(tmp_path):
    proc = _s2d("sweep", str(TOY_SWEEP), "--plan", "--seeds", f"1,{2**32}", cwd=tmp_path)
    _clear(proc, 2, f"--seeds must lie in 0..{2**32 - 1}; got [{2**32}]")
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(f"name: s\nbase: {TOY}\nseeds: [1, -1]\narms:\n  only: {{}}\n")
    _clear(_s2d("sweep", str(sweep), "--plan", cwd=tmp_path), 2, "seeds.1: Input should be greater than")


def test_runs_dir_under_a_file_is_named_before_anything_starts(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    proc = _s2d("run", str(TOY), "--set", f"runs_dir={blocker / 'runs'}", cwd=tmp_path)
    _clear(proc, 2, f"runs_dir: cannot write to {blocker / 'runs'}: Not a directory")
    sweep = _s2d("sweep", str(TOY_SWEEP), "--seeds", "1", "--set", f"runs_dir={blocker}", cwd=tmp_path)
    _clear(sweep, 2, f"runs_dir: {blocker} is not a directory")


def test_store_dir_under_a_file_is_named_before_anything_starts(tmp_path, no_server, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    args = ["--set", f"runs_dir={tmp_path / 'runs'}", "--set", f"store_dir={blocker / 'store'}"]
    assert no_server(["evaluate", str(TOY), *args]) == 2
    assert f"store_dir: cannot write to {blocker / 'store'}: Not a directory" in capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only directory")
def test_read_only_runs_dir_is_named(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir(mode=0o555)
    try:
        proc = _s2d("run", str(TOY), "--set", f"runs_dir={runs}", cwd=tmp_path)
    finally:
        runs.chmod(0o755)
    _clear(proc, 2, f"runs_dir: cannot write to {runs}: Permission denied")


def test_failed_sweep_ends_with_its_message_and_report(prefect_server, tmp_path):
    """A run that fails (its seed's data_prep cannot create its directory: a file is in the way)
    leaves the report written, and the command ends with the report's message and exit 1, without a
    traceback of the flow or the command."""
    from prefect.settings import PREFECT_API_URL

    from sparse2dense.pipeline import plan_keys
    from sparse2dense.sweep import arm_runs, load_sweep

    store = tmp_path / "store"
    sweep = tmp_path / "failing.yaml"
    sweep.write_text(
        f"name: failing\nbase: {TOY}\nseeds: [5]\narms:\n  only: {{}}\n"
        f"set:\n  store_dir: {store}\n  runs_dir: {tmp_path / 'runs'}\n"
    )
    (run,) = arm_runs(load_sweep(sweep))
    blocked = store / "data_prep" / plan_keys(run.config)["data_prep"]
    blocked.parent.mkdir(parents=True)
    blocked.write_text("")
    env = {"PREFECT_API_URL": PREFECT_API_URL.value(), "S2D_TASK_RETRIES": "0"}
    proc = _s2d("sweep", str(sweep), cwd=tmp_path, env=env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: runs failed: ['only@seed5']; report: "), proc.stderr
    output = proc.stdout + proc.stderr
    assert "SweepFailed" not in output and "flows/cli.py" not in output and "flows/sweep.py" not in output
    report = (Path(last.split("report: ")[1]) / "report.md").read_text()
    assert "| only | 0/1 |" in report and report.rstrip().endswith("| failed |")


def test_lost_result_records_are_restored_and_their_stages_reported_cached(micro_run, micro_workdir, caplog):
    """Prefect takes an unreadable (or missing) result record for a miss; the stage directory still
    verifies, so nothing is recomputed, and the stage must say `cached`, not `computed`."""
    from prefect.filesystems import LocalFileSystem
    from prefect.results import ResultStore

    from flows.post_train import post_train
    from sparse2dense.config import load_config

    store = micro_workdir / "store"
    results = store / "_prefect" / "results"
    records = {
        name: f"{name}-{micro_run['stages'][name]['key']}" for name in ("data_prep", "teacher_rollouts")
    }
    (results / records["data_prep"]).write_bytes(b"{not a result record")
    (results / records["teacher_rollouts"]).unlink()
    logs = {p: p.stat().st_size for p in (store / "_logs").rglob("*.log")}
    paths = [f"store_dir={store}", f"runs_dir={micro_workdir / 'runs'}"]
    again = post_train(load_config(TOY, [*MICRO, *paths]))
    assert {name: again["stages"][name]["status"] for name in records} == dict.fromkeys(records, "cached")
    assert {p: p.stat().st_size for p in logs} == logs  # no stage program ran
    warned = [r.getMessage() for r in caplog.records if "unreadable Prefect result record" in r.getMessage()]
    assert len(warned) == 1 and str(results / records["data_prep"]) in warned[0]
    readable = ResultStore(result_storage=LocalFileSystem(basepath=str(results)))
    assert all(readable.exists(record) for record in records.values())
