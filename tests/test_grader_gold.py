"""Gold solutions grade correct: `benchmarks/grader_gold.py` on MATH-500, AIME 2024/2025 and MATH train.

Needs the benchmark files (S2D_DATA_DIR, else ../shared/data beside the repository); skipped
without them.
"""

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "grader_gold.py"


def _load():
    spec = importlib.util.spec_from_file_location("grader_gold", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


gold = _load()
DATA = gold.default_data_dir()
pytestmark = pytest.mark.skipif(
    not (DATA / "math500" / "test.jsonl").is_file(),
    reason=f"benchmark data not found at {DATA} (set S2D_DATA_DIR to the shared data directory)",
)


@pytest.fixture(scope="module")
def reports():
    return gold.run(DATA)


def test_math500_all_correct(reports):
    report = reports["math500"]
    assert (report.correct, report.graded) == (500, 500), report.exceptions


def test_aime24_boxed_solutions_and_original_answers_correct(reports):
    report = reports["aime24"]
    assert report.correct == report.graded == 29 + 30, report.exceptions
    assert len(report.notes) == 1 and report.notes[0].startswith("2024-I-1: solution has no")


def test_aime25_answer_forms_correct(reports):
    report = reports["aime25"]
    assert report.correct == report.graded == 30 * 4, report.exceptions


def test_math_train_extractors_agree(reports):
    report = reports["math_train"]
    assert report.graded == 7500 and report.correct / report.graded >= 0.995
    assert len(report.exceptions) == report.graded - report.correct
