"""`s2d grade`: grade a JSONL file of (gold, pred) records with the pipeline's own grading function.

Each record's `pred` is a full completion or a bare answer, graded by `grading.grade`: the final
box of a completion, the answer stated in one without a box, or the bare answer itself. Every
record is written back with `verdict`, `reason` and `ms` (its grading wall time), and the totals
per verdict are printed. Records are graded from
a few threads at once, so the symbolic checks spread over the grader's worker processes. A line
that is not a JSON object is reported by its line number and left out; the rest are still graded.
The output's temp file is created before any grading (an unwritable path fails at once) and renamed
onto the output only when every record is written, so a failure never leaves a partial file.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from sparse2dense import grader_pool
from sparse2dense.config import ConfigError
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
            except RecursionError:
                malformed.append(f"line {number}: JSON nested too deeply")
                continue
            if isinstance(record, dict):
                records.append(record)
            else:
                malformed.append(f"line {number}: a JSON {type(record).__name__}, not an object")
    return records, malformed


def _reserve_output(output_path: Path) -> tuple[int, Path]:
    """A new temp file beside `output_path`, open for writing; ConfigError naming the path when the
    path cannot be written. `os.open` rather than mkstemp: the output gets the usual umask mode."""
    if output_path.is_dir():
        raise ConfigError(f"cannot write {output_path}: it is a directory")
    tmp = output_path.with_name(f".{output_path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        output_path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
    except FileExistsError:
        raise ConfigError(f"cannot write {output_path}: {output_path.parent} is not a directory") from None
    except OSError as err:
        raise ConfigError(f"cannot write {output_path}: {err.strerror or err}") from None


def grade_file(input_path: Path, output_path: Path, echo: TextIO | None = None) -> GradeReport:
    """Grade every record of `input_path` into `output_path`; the count per verdict and the lines
    that could not be read. Raises ConfigError, before grading, when `output_path` is not writable."""
    fd, tmp = _reserve_output(output_path)
    try:
        # A lone surrogate (a `\ud800` escape in the input) cannot be encoded; written back as that
        # same escape, the line stays valid JSON with the same value.
        with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as fh:
            records, malformed = read_jsonl_records(input_path)
            threads = grader_pool.get_pool().workers
            with ThreadPoolExecutor(max_workers=threads) as executor:
                graded = list(executor.map(_grade_record, records))
            for record in graded:
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, output_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    totals = Counter(record["verdict"] for record in graded)
    if echo is not None:
        print(f"graded {len(graded)} records -> {output_path}", file=echo)
        for verdict in Verdict:
            print(f"  {verdict.value:<10}{totals.get(verdict.value, 0):>8}", file=echo)
    return GradeReport(totals, malformed)
