"""The grader on gold solutions: every reference solution's final answer should grade correct.

  MATH-500     last box of `solution` vs `answer` (target 500/500).
  AIME 2024    last box of `solution` vs `answer` (I-1's solution has no box: reported, not graded),
               and the source's `answer_original` (`025`) vs `answer`.
  AIME 2025    no solutions exist, so only the answer-format tolerance is checked: `answer` as a
               bare box, zero-padded to AIME's three digits, as a float (`70.0`) and with a degree
               sign (one public copy writes II-5 as `336^\\circ`).
  MATH train   no answer field: our extractor's answer vs a deliberately simple, independent
               brace-only extractor's answer, graded (target >= 99.5%).
Prints counts and every exception with its verdict and reason. Run:
  python benchmarks/grader_gold.py [DATA_DIR] [--only math500 aime24 aime25 math_train]
(DATA_DIR defaults to $S2D_DATA_DIR, else ../shared/data beside the repository.)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sparse2dense.grading import extract_boxed, grade_answer, grade_completion  # noqa: E402

BENCHES = ("math500", "aime24", "aime25", "math_train")


@dataclass
class Report:
    name: str
    graded: int = 0
    correct: int = 0
    reasons: Counter = field(default_factory=Counter)
    exceptions: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, rid: str, gold: str, grade) -> None:
        self.graded += 1
        self.correct += grade.correct
        self.reasons[grade.reason] += 1
        if not grade.correct:
            self.exceptions.append(
                f"{rid}: {grade.verdict} ({grade.reason}) gold={gold!r} pred={grade.pred!r}"
            )


def default_data_dir() -> Path:
    return Path(os.environ.get("S2D_DATA_DIR") or ROOT.parent / "shared" / "data")


def _rows(path: Path) -> list[dict]:
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


def brace_only_box(text: str) -> str | None:
    """Independent reference extractor: last literal `\\boxed{`, braces counted, nothing else."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, begin = 0, start + len("\\boxed")
    for i in range(begin, len(text)):
        depth += text[i] == "{"
        depth -= text[i] == "}"
        if depth == 0:
            return text[begin + 1 : i]
    return None


def math500(data: Path) -> Report:
    report = Report("MATH-500: last box of solution vs answer")
    for row in _rows(data / "math500" / "test.jsonl"):
        report.add(row["unique_id"], row["answer"], grade_completion(row["answer"], row["solution"]))
    return report


def aime24(data: Path) -> Report:
    report = Report("AIME 2024: last box of solution vs answer; answer_original vs answer")
    for row in _rows(data / "aime24" / "test.jsonl"):
        if extract_boxed(row["solution"]) is None:
            report.notes.append(
                f"{row['id']}: solution has no \\boxed{{}} (answer {row['answer']}); not graded"
            )
        else:
            report.add(row["id"], row["answer"], grade_completion(row["answer"], row["solution"]))
        report.add(
            f"{row['id']} answer_original", row["answer"], grade_answer(row["answer"], row["answer_original"])
        )
    return report


def aime25(data: Path) -> Report:
    report = Report("AIME 2025: answer forms (plain, 3-digit, float, degrees) vs answer")
    for row in _rows(data / "aime25" / "test.jsonl"):
        gold, value = row["answer"], int(row["answer"])
        for form in (gold, f"{value:03d}", f"{value}.0", f"{value}^\\circ"):
            report.add(
                f"{row['id']} {form!r}", gold, grade_completion(gold, f"The answer is \\boxed{{{form}}}.")
            )
    report.notes.append("no solutions in this file: only answer-format tolerance is measured")
    return report


def math_train(data: Path) -> Report:
    report = Report("MATH train: our extractor vs brace-only extractor, graded")
    for row in _rows(data / "math_train" / "train.jsonl"):
        reference = brace_only_box(row["solution"])
        if reference is None:
            ours = extract_boxed(row["solution"])
            report.graded += 1
            report.exceptions.append(f"{row['unique_id']}: brace-only extractor found nothing; ours={ours!r}")
            continue
        if not reference.strip():
            report.graded += 1
            report.exceptions.append(
                f"{row['unique_id']}: the solution's last box is empty (\\boxed{{}}) in the source"
            )
            continue
        report.add(row["unique_id"], reference, grade_completion(reference, row["solution"]))
    return report


def run(data: Path, only: tuple[str, ...] = BENCHES) -> dict[str, Report]:
    benches = {"math500": math500, "aime24": aime24, "aime25": aime25, "math_train": math_train}
    reports = {}
    for name in only:
        start = time.perf_counter()
        reports[name] = benches[name](data)
        reports[name].seconds = time.perf_counter() - start
    return reports


def print_report(report: Report) -> None:
    share = report.correct / max(report.graded, 1)
    print(
        f"\n{report.name}\n  correct {report.correct}/{report.graded} ({share:.2%}) in {report.seconds:.1f}s"
    )
    print("  by reason: " + ", ".join(f"{r}: {n}" for r, n in report.reasons.most_common()))
    for note in report.notes:
        print(f"  note: {note}")
    for exception in report.exceptions:
        print(f"  exception: {exception}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", nargs="?", type=Path, default=None)
    parser.add_argument("--only", nargs="+", choices=BENCHES, default=list(BENCHES))
    args = parser.parse_args()
    data = args.data_dir or default_data_dir()
    if not data.is_dir():
        sys.exit(f"data directory not found: {data}")
    for report in run(data, tuple(args.only)).values():
        print_report(report)


if __name__ == "__main__":
    main()
