"""`s2d grade`: grade a JSONL file of (gold, pred) records with the pipeline's own grading function.

Each record's `pred` is a full completion or a bare answer, graded by `grading.grade`: the final
box of a completion, the answer stated in one without a box, or the bare answer itself. Every
record is written back with `verdict`, `reason` and `ms` (its grading wall time), and the totals
per verdict are printed. Records are graded from
a few threads at once, so the symbolic checks spread over the grader's worker processes. A line
that is not a JSON object is reported by its line number and left out; the rest are still graded.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from sparse2dense import grader_pool
from sparse2dense.grading import Verdict, grade


def _grade_record(record: dict[str, Any]) -> dict[str, Any]:
    start = time.perf_counter()
    if "gold" not in record or "pred" not in record:
        verdict, reason = Verdict.ERROR, "record lacks a gold or pred field"
    else:
        result = grade(str(record["gold"]), str(record["pred"]))
        verdict, reason = result.verdict, result.reason
    ms = (time.perf_counter() - start) * 1000
    return record | {"verdict": str(verdict), "reason": reason, "ms": round(ms, 3)}


def default_output(input_path: Path) -> Path:
    return input_path.with_name(input_path.name.removesuffix(".jsonl") + ".graded.jsonl")


@dataclass
class GradeReport:
    totals: Counter[str]
    malformed: list[str] = field(default_factory=list)  # "line N: why", one per unreadable line


def read_jsonl_records(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The JSON objects of a jsonl file, and `line N: why` for every line that is not one."""
    records, malformed = [], []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                malformed.append(f"line {number}: not valid JSON ({err.msg} at column {err.colno})")
                continue
            if isinstance(record, dict):
                records.append(record)
            else:
                malformed.append(f"line {number}: a JSON {type(record).__name__}, not an object")
    return records, malformed


def grade_file(input_path: Path, output_path: Path, echo: TextIO | None = None) -> GradeReport:
    """Grade every record of `input_path` into `output_path`; the count per verdict and the lines
    that could not be read."""
    records, malformed = read_jsonl_records(input_path)
    threads = grader_pool.get_pool().workers
    with ThreadPoolExecutor(max_workers=threads) as executor:
        graded = list(executor.map(_grade_record, records))
    output_path.parent.mkdir(parents=True, exist_ok=True)
    with open(output_path, "w") as fh:
        for record in graded:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    totals = Counter(record["verdict"] for record in graded)
    if echo is not None:
        print(f"graded {len(graded)} records -> {output_path}", file=echo)
        for verdict in Verdict:
            print(f"  {verdict.value:<10}{totals.get(verdict.value, 0):>8}", file=echo)
    return GradeReport(totals, malformed)
