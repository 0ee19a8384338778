"""`s2d grade`: records in, records with verdict/reason/ms out, totals per verdict printed.

An output path that cannot be written fails before any grading; a write that fails midway leaves the
previous output as it was.
"""

import json
from types import SimpleNamespace

import pytest

from flows.cli import main
from sparse2dense import grade_file as grade_file_module
from sparse2dense import grader_pool

RECORDS = [
    {"id": "boxed", "gold": r"\frac{1}{2}", "pred": r"so it is \boxed{0.5}."},
    {"id": "bare", "gold": "x^2+1", "pred": "1+x^2"},
    {"id": "bare-number", "gold": 204, "pred": "204"},
    {"id": "wrong", "gold": "3", "pred": r"\boxed{4}"},
    {"id": "unclosed", "gold": "3", "pred": r"\boxed{3"},
    {"id": "tower", "gold": "3", "pred": r"\boxed{9^{9^{9}}}"},
    {"id": "stall", "gold": "3", "pred": r"999^{999 \cdot 999 \cdot 999}"},
    {"id": "missing"},
]
EXPECTED = {
    "boxed": "correct",
    "bare": "correct",
    "bare-number": "correct",
    "wrong": "wrong",
    "unclosed": "no_answer",
    "tower": "wrong",
    "stall": "timeout",
    "missing": "error",
}


def test_grade_command(tmp_path, capsys):
    src, out = tmp_path / "preds.jsonl", tmp_path / "graded.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    try:
        assert main(["grade", str(src), "--output", str(out), "--limit-s", "2", "--workers", "2"]) == 0
    finally:
        grader_pool.shutdown()
    graded = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in graded] == [r["id"] for r in RECORDS]
    assert {r["id"]: r["verdict"] for r in graded} == EXPECTED
    assert all(r["reason"] and r["ms"] >= 0 for r in graded)
    assert graded[0]["pred"] == RECORDS[0]["pred"]  # input fields are kept
    printed = capsys.readouterr().out
    for line in ["correct          3", "wrong            2", "timeout          1", "error            1"]:
        assert line in printed


def test_default_output_sits_beside_the_input(tmp_path):
    src = tmp_path / "preds.jsonl"
    src.write_text(json.dumps({"gold": "1", "pred": "1"}) + "\n")
    try:
        main(["grade", str(src)])
    finally:
        grader_pool.shutdown()
    assert json.loads((tmp_path / "preds.graded.jsonl").read_text())["verdict"] == "correct"


def test_unwritable_output_fails_before_grading(tmp_path, capsys):
    src, blocker = tmp_path / "preds.jsonl", tmp_path / "a-file"
    src.write_text(json.dumps({"gold": "3", "pred": r"999^{999 \cdot 999 \cdot 999}"}) + "\n")
    blocker.write_text("a regular file where a directory would have to be")
    out = blocker / "graded.jsonl"  # root may write anywhere, but never below a regular file
    try:
        assert main(["grade", str(src), "--output", str(out), "--limit-s", "5"]) == 2
        assert grader_pool.get_pool().stats.calls == 0  # nothing reached the (stalling) symbolic check
    finally:
        grader_pool.shutdown()
    assert f"error: cannot write {out}:" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "preds.jsonl"]


def test_a_failed_write_leaves_the_previous_output_whole(tmp_path, monkeypatch):
    src, out = tmp_path / "preds.jsonl", tmp_path / "graded.jsonl"
    src.write_text("".join(json.dumps({"gold": "1", "pred": "1"}) + "\n" for _ in range(3)))
    out.write_text("previous results\n")
    written = []

    def dumps_then_fail(record, **kwargs):
        if written:
            raise OSError(28, "No space left on device")
        written.append(record)
        return json.dumps(record, **kwargs)

    monkeypatch.setattr(
        grade_file_module,
        "json",
        SimpleNamespace(loads=json.loads, dumps=dumps_then_fail, JSONDecodeError=json.JSONDecodeError),
    )
    with pytest.raises(OSError):
        grade_file_module.grade_file(src, out)
    assert out.read_text() == "previous results\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["graded.jsonl", "preds.jsonl"]


def test_records_past_what_json_and_utf8_allow(tmp_path, capsys):
    src, out = tmp_path / "preds.jsonl", tmp_path / "graded.jsonl"
    lone_surrogate = '{"gold": "1", "pred": "\\ud800 so \\\\boxed{1}"}\n'
    src.write_text(lone_surrogate + "[" * 100_000 + "\n")
    try:
        assert main(["grade", str(src), "--output", str(out)]) == 1
    finally:
        grader_pool.shutdown()
    (graded,) = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert graded["pred"] == "\ud800 so \\boxed{1}" and graded["verdict"] == "correct"
    assert "line 2: JSON nested too deeply" in capsys.readouterr().err
