"""Datasets as records of one schema: id, problem, answer, source, metadata (+ solution where known).

Loaders read the benchmark files (MATH-500, AIME 2024/2025, MATH train, DAPO-Math-17k, GSM8K) from
a local directory, or any jsonl/json/parquet path or hub dataset id through `datasets`. The split
into the stage-1 labeled set and the held-out stage-4 set is seeded and disjoint. `dataset_problem`
checks a name at config validation, so a typo is caught before any stage runs.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from sparse2dense.grading import extract_boxed

Record = dict[str, Any]


def save_records(path: Path, records: Iterable[Record]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with open(path, "w") as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count


def load_records(path: Path) -> list[Record]:
    if not path.is_file():
        raise FileNotFoundError(f"records file not found: {path}")
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _record(rid: str, problem: str, answer: str, source: str, **metadata: Any) -> Record:
    return {"id": rid, "problem": problem, "answer": str(answer), "source": source, "metadata": metadata}


def _from_math(row: dict, source: str, index: int) -> Record:
    answer = row.get("answer") or extract_boxed(row.get("solution", "")) or ""
    return _record(
        row.get("unique_id", f"{source}-{index}"),
        row["problem"],
        answer,
        source,
        subject=row.get("subject"),
        level=row.get("level"),
    )


def _from_aime(row: dict, source: str, index: int) -> Record:
    return _record(str(row.get("id", f"{source}-{index}")), row["problem"], row["answer"], source)


def _from_dapo(row: dict, source: str, index: int) -> Record:
    return _record(
        f"dapo-{row['extra_info']['index']}",
        row["prompt"][0]["content"],
        row["reward_model"]["ground_truth"],
        source,
    )


def _from_gsm8k(row: dict, source: str, index: int) -> Record:
    answer = row["answer"].split("####")[-1].strip().replace(",", "")
    return _record(f"{source}-{index}", row["question"], answer, source)


# name -> (file under the data directory, row converter)
BENCHMARKS: dict[str, tuple[str, Callable[[dict, str, int], Record]]] = {
    "math500": ("math500/test.jsonl", _from_math),
    "aime24": ("aime24/test.jsonl", _from_aime),
    "aime25": ("aime25/test.jsonl", _from_aime),
    "math_train": ("math_train/train.jsonl", _from_math),
    "dapo_math_17k": ("dapo_math_17k/dapo_math_17k.parquet", _from_dapo),
    "gsm8k": ("gsm8k/test.jsonl", _from_gsm8k),
    "gsm8k_train": ("gsm8k/train.jsonl", _from_gsm8k),
}


# The eval set the toy world generates (data.kind = toy has no other).
TOY_EVAL_SETS = ("toy_test",)
FILE_KINDS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}
HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")


def dataset_problem(name: str, kind: str = "math") -> str | None:
    """Why no loader reads `name`, or None. Kind math: a known benchmark, an existing
    .jsonl/.json/.parquet file or a hub id (org/name); kind toy: an eval set the toy world generates."""
    if kind == "toy":
        return None if name in TOY_EVAL_SETS else f"{name!r} is not a toy eval set"
    if name in BENCHMARKS:
        return None
    path = Path(name).expanduser()
    if path.exists():
        return None if path.suffix in FILE_KINDS else f"{name!r} is not a .jsonl, .json or .parquet file"
    if HUB_ID.fullmatch(name) and path.suffix not in FILE_KINDS:
        return None
    if path.suffix in FILE_KINDS or len(path.parts) > 1:
        return f"{name!r}: no such file"
    return f"{name!r} is not a known dataset"


def known_datasets(kind: str) -> str:
    """What `dataset_problem` accepts, for an error message."""
    if kind == "toy":
        return f"kind toy generates {list(TOY_EVAL_SETS)}"
    return f"known: {', '.join(BENCHMARKS)}; or a .jsonl/.json/.parquet path, or a hub id (org/name)"


def _read_rows(location: str) -> list[dict]:
    import datasets

    path = Path(location).expanduser()
    if path.exists():
        kind = FILE_KINDS.get(path.suffix)
        if kind is None:
            raise ValueError(f"unsupported data file type: {path}")
        ds = datasets.load_dataset(kind, data_files=str(path), split="train")
    elif HUB_ID.fullmatch(location):
        ds = datasets.load_dataset(location, split="train")
    else:
        raise FileNotFoundError(f"data file not found: {path}")
    return list(ds)


def load_benchmark(name: str, data_dir: str | Path) -> list[Record]:
    """Records of a named benchmark from `data_dir`, or of a path / hub id in the MATH schema."""
    if name in BENCHMARKS:
        rel, convert = BENCHMARKS[name]
        location = str(Path(data_dir) / rel)
    else:
        location, convert = name, _from_math
    rows = _read_rows(location)
    return [convert(row, name, i) for i, row in enumerate(rows)]


def split_labeled(records: list[Record], heldout_fraction: float, seed: int) -> tuple[list, list]:
    """Seeded disjoint split into (stage-1 labeled set, held-out stage-4 set)."""
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    n_heldout = round(len(records) * heldout_fraction)
    heldout = [records[i] for i in sorted(order[:n_heldout])]
    stage1 = [records[i] for i in sorted(order[n_heldout:])]
    return stage1, heldout


def strip_labels(records: list[Record]) -> list[Record]:
    return [{k: v for k, v in r.items() if k not in ("answer", "solution")} for r in records]
