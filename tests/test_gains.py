"""`s2d gains`: each role's trained model against its start, on run summaries built by hand with known
answers (eval records in stage folders, as a finished run leaves them)."""

import json
import math
from pathlib import Path

import pytest

from flows.cli import main
from sparse2dense.gains import SummaryError, gains_over_runs, read_summary, render, run_gains


def _eval_stage(root: Path, name: str, correct: dict[str, bool], benchmark: str = "words_test") -> Path:
    folder = root / "store" / name
    (folder / "records").mkdir(parents=True)
    ids = list(correct)[::-1]  # written in another order than the other stage's: pairing is by id
    lines = [
        json.dumps(
            {"id": pid, "answer": "1", "samples": [{"verdict": "correct" if correct[pid] else "wrong"}]}
        )
        for pid in ids
    ]
    (folder / "records" / f"{benchmark}.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def _run(
    root: Path, seed: int, before: dict[str, dict[str, bool]], after: dict[str, dict[str, bool]]
) -> Path:
    """A finished run whose roles solve `before[role]` at their start and `after[role]` once trained."""
    data_prep = root / "store" / "data_prep"
    data_prep.mkdir(parents=True)
    (data_prep / "spec.json").write_text(json.dumps({"stage": "data_prep", "seed": seed}))
    stages = {"data_prep": {"path": str(data_prep), "status": "computed"}}
    names = {"teacher": ("teacher_base", "teacher_rl"), "student": ("student_base", "student_final")}
    for role, (start, end) in names.items():
        if role in before:
            stages[f"eval/{start}"] = {"path": str(_eval_stage(root, start, before[role]))}
            stages[f"eval/{end}"] = {"path": str(_eval_stage(root, end, after[role]))}
    run_dir = root / "runs" / "flows" / f"seed{seed}"
    run_dir.mkdir(parents=True)
    (run_dir / "summary.json").write_text(json.dumps({"status": "completed", "stages": stages}))
    return run_dir


def _problems(n: int, solved: int) -> dict[str, bool]:
    return {f"p{i}": i < solved for i in range(n)}


def test_one_run_pairs_by_problem_and_reports_each_role(tmp_path):
    run = _run(
        tmp_path,
        seed=11,
        before={"teacher": _problems(100, 20), "student": _problems(100, 5)},
        after={"teacher": _problems(100, 50), "student": _problems(100, 5)},
    )
    gains = {g.role: g for g in run_gains(read_summary(run))}
    teacher, student = gains["teacher"], gains["student"]
    assert (teacher.before, teacher.after, teacher.delta.delta) == (0.2, 0.5, pytest.approx(0.3))
    # 30 problems gained, none lost, out of 100: the bootstrap interval sits around +0.3, above 0.
    assert 0.2 < teacher.delta.problems_low < 0.3 < teacher.delta.problems_high < 0.4
    # Same problems right before and after: zero, with no spread at all.
    assert (student.delta.delta, student.delta.problems_low, student.delta.problems_high) == (0.0, 0.0, 0.0)
    assert read_summary(run / "summary.json").seed == 11


def test_over_runs_the_interval_is_the_t_interval_of_the_per_run_deltas(tmp_path):
    runs = [
        read_summary(
            _run(
                tmp_path / str(seed),
                seed,
                {"teacher": _problems(100, 20)},
                {"teacher": _problems(100, solved)},
            )
        )
        for seed, solved in ((11, 30), (12, 40), (13, 50))
    ]
    (over,) = gains_over_runs(runs)
    # per-run deltas 0.1, 0.2, 0.3: mean 0.2, sd 0.1, t_{2, 0.975} = 4.3027 -> half width 0.2484
    assert over.seeds == (11, 12, 13)
    assert over.over_runs.values == pytest.approx((0.1, 0.2, 0.3))
    assert over.over_runs.low == pytest.approx(0.2 - 4.3027 * 0.1 / math.sqrt(3), abs=1e-4)
    # The pooled interval over problems treats each trained model as fixed: far narrower.
    assert over.problems.problems_high - over.problems.problems_low < over.over_runs.high - over.over_runs.low
    table = render(runs)
    assert "| teacher | words_test | 12 | 20.0 | 40.0 | +20.0 |" in table
    assert "over 3 runs (seeds 11, 12, 13)" in table and "[-4.8, +44.8]" in table


def test_evaluations_on_different_problems_are_refused(tmp_path):
    run = _run(tmp_path, 1, {"teacher": _problems(10, 2)}, {"teacher": _problems(9, 2)})
    with pytest.raises(SummaryError, match="the teacher's models were evaluated on different problems"):
        run_gains(read_summary(run))


def test_the_command_names_the_path_of_a_bad_summary(tmp_path, capsys):
    assert main(["gains", str(tmp_path / "nowhere")]) == 2
    assert f"error: run summary not found: {tmp_path / 'nowhere'}\n" in capsys.readouterr().err

    (tmp_path / "failed").mkdir()
    (tmp_path / "failed" / "summary.json").write_text(json.dumps({"status": "failed", "stages": {}}))
    assert main(["gains", str(tmp_path / "failed")]) == 2
    assert "the run did not complete (status 'failed')" in capsys.readouterr().err


def test_the_command_prints_the_table(tmp_path, capsys):
    run = _run(tmp_path, 3, {"teacher": _problems(50, 10)}, {"teacher": _problems(50, 25)})
    assert main(["gains", str(run)]) == 0
    out = capsys.readouterr().out
    assert "| teacher | words_test | 3 | 20.0 | 50.0 | +30.0 |" in out
    assert "over 1 run" not in out and "t interval" not in out  # one run: no interval over runs
