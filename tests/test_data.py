"""Benchmark loaders: every shared file loads into the one record schema with its known row count.

Needs the benchmark files (S2D_DATA_DIR, else ../shared/data beside the repository); skipped with
the reason when they are absent.
"""

import os
from pathlib import Path

import pytest

from sparse2dense.data import load_benchmark, split_labeled, strip_labels

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("S2D_DATA_DIR") or ROOT.parent / "shared" / "data")
needs_data = pytest.mark.skipif(not (DATA / "math500").is_dir(), reason=f"benchmark data not found at {DATA}")

# Row counts from the files' provenance record.
EXPECTED = {
    "math500": 500,
    "aime24": 30,
    "aime25": 30,
    "math_train": 7500,
    "dapo_math_17k": 17917,
    "gsm8k": 1319,
    "gsm8k_train": 7473,
}


@needs_data
@pytest.mark.parametrize(("name", "rows"), EXPECTED.items())
def test_benchmark_loads_into_record_schema(name, rows):
    records = load_benchmark(name, DATA)
    assert len(records) == rows
    assert len({r["id"] for r in records}) == rows
    for record in records:
        assert set(record) == {"id", "problem", "answer", "source", "metadata"}
        assert record["problem"].strip() and record["source"] == name


@needs_data
def test_answer_quirks_are_normalized():
    aime24 = {r["id"]: r["answer"] for r in load_benchmark("aime24", DATA)}
    assert aime24["2024-I-2"] == "25"  # leading zero removed upstream, kept as a string
    gsm = load_benchmark("gsm8k", DATA)
    assert all("," not in r["answer"] for r in gsm)  # thousands separators stripped
    math_train = {r["id"]: r["answer"] for r in load_benchmark("math_train", DATA)}
    assert math_train["train/algebra/24014.json"] == "2"  # `\boxed 2` without braces


def test_local_file_path_loads_and_missing_path_is_named(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text('{"problem": "1+1?", "answer": "2"}\n')
    assert load_benchmark(str(path), tmp_path)[0]["answer"] == "2"
    with pytest.raises(FileNotFoundError, match="nowhere.jsonl"):
        load_benchmark(str(tmp_path / "nowhere.jsonl"), tmp_path)


def test_split_is_seeded_and_disjoint():
    records = [{"id": str(i), "problem": str(i), "answer": "1"} for i in range(100)]
    a, b = split_labeled(records, 0.2, seed=3), split_labeled(records, 0.2, seed=3)
    assert a == b and len(a[1]) == 20
    assert not {r["id"] for r in a[0]} & {r["id"] for r in a[1]}
    assert "answer" not in strip_labels(records)[0]
