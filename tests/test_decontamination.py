"""Decontamination: training splits share no problem with any eval set, for both presets."""

import os
from pathlib import Path

import pytest

from sparse2dense.config import load_config
from sparse2dense.decontamination import EvalIndex, decontaminate
from sparse2dense.stages.data_prep import decontaminate_splits, prepare_math, prepare_toy

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("S2D_DATA_DIR", ROOT.parent / "shared" / "data"))


def _record(rid, problem):
    return {"id": rid, "problem": problem, "answer": "1", "source": "t", "metadata": {}}


def test_exact_and_ngram_matches_are_removed_and_reported():
    evals = [_record("e1", "Find $x$ if $2x + 3 = 7$."), _record("e2", " ".join(f"w{i}" for i in range(20)))]
    index = EvalIndex(evals, n=13)
    train = [
        _record("t1", "find  x if 2x + 3 = 7."),
        _record("t2", "Prefix words then " + " ".join(f"w{i}" for i in range(3, 16)) + " and more"),
        _record("t3", "A different problem about triangles."),
    ]
    kept, removed = decontaminate(train, index)
    assert [r["id"] for r in kept] == ["t3"]
    assert removed == [
        {"id": "t1", "reason": "exact", "eval_id": "e1"},
        {"id": "t2", "reason": "13-gram", "eval_id": "e2"},
    ]


def _assert_clean(prepared, n):
    """Zero overlap under the stage's own criterion: a second pass removes nothing."""
    _, removed = decontaminate_splits(prepared, n)
    assert all(rows == [] for rows in removed.values()), {k: v[:3] for k, v in removed.items() if v}


def test_toy_preset_splits_do_not_overlap_eval():
    cfg = load_config(ROOT / "configs" / "toy.yaml")
    prepared, removed = decontaminate_splits(prepare_toy(cfg.data, cfg.seed), cfg.data.decontamination_ngram)
    _assert_clean(prepared, cfg.data.decontamination_ngram)
    assert removed["stage1"] == []  # disjoint by construction


@pytest.mark.skipif(
    not (DATA / "math500" / "test.jsonl").is_file(), reason=f"benchmark data not found at {DATA}"
)
def test_qwen3_preset_splits_do_not_overlap_eval_after_decontamination():
    cfg = load_config(ROOT / "configs" / "qwen3-8b-to-1.7b.yaml", [f"data.data_dir={DATA}"])
    raw = prepare_math(cfg.data, cfg.seed)
    prepared, removed = decontaminate_splits(raw, cfg.data.decontamination_ngram)
    _assert_clean(prepared, cfg.data.decontamination_ngram)
    assert sum(len(v) for v in removed.values()) > 0  # MATH train and DAPO do overlap MATH-500/AIME
    assert len(prepared["stage1"]) + len(prepared["heldout"]) > 15000
