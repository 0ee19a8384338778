"""`s2d grade`: records in, records with verdict/reason/ms out, totals per verdict printed."""

import json

from flows.cli import main
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
