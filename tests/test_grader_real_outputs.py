"""The grader on what a real model writes: completions of SmolLM2-135M-Instruct (the raw model, its
RL'd self, the pruned student before and after the bridge; word problems and GSM8K) from the eval
records of `configs/smollm2-cpu.yaml`, each with a verdict checked by hand: is the value the
completion finally commits to the gold answer? The grader must agree on at least 98% of them; the
ones it does not are listed below with the reason, so a change either way is seen."""

import json
from pathlib import Path

from sparse2dense.grading import grade_output

FIXTURE = Path(__file__).parent / "data" / "smollm2_completions.jsonl"

# id@model -> why the grader's verdict differs from the hand verdict.
KNOWN_DISAGREEMENTS = {
    "words-test-151@teacher_rl": (
        "'Emma has 4 flowers at school - 8 flowers at school' (gold 8): graded correct, as the "
        "grader reads the final sentence's last value, 8; by hand no count of 8 is stated, only "
        "a difference 4 - 8. A prose reading that parsed the expression would need more than the "
        "final value, which the model's ordinary answers ('... 2 + 9 = 11 flowers') rely on."
    ),
}


def _rows() -> list[dict]:
    return [json.loads(line) for line in FIXTURE.read_text().splitlines() if line.strip()]


def test_the_fixture_is_large_and_varied():
    rows = _rows()
    assert len(rows) >= 100
    assert {r["hand"] for r in rows} == {"correct", "wrong"}
    assert len({r["model"] for r in rows}) >= 3 and any(r["id"].startswith("gsm8k") for r in rows)
    assert len({f"{r['id']}@{r['model']}" for r in rows}) == len(rows)


def test_the_grader_agrees_with_the_hand_verdicts():
    rows = _rows()
    disagreements = {
        f"{r['id']}@{r['model']}": (r["hand"], grade_output(r["gold"], r["completion"], "stated"))
        for r in rows
        if grade_output(r["gold"], r["completion"], "stated").correct != (r["hand"] == "correct")
    }
    assert set(disagreements) == set(KNOWN_DISAGREEMENTS), disagreements
    assert 1 - len(disagreements) / len(rows) >= 0.98
