"""Bad input to `s2d` ends in one clear error naming what is wrong, never a traceback.

Each case runs the real command line in a subprocess (as a user would), so an uncaught exception
anywhere on the way would show as a traceback on stderr.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, TOY


def _s2d(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    env.pop("PREFECT_API_URL", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args],
        cwd=cwd,
        env=env,
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
