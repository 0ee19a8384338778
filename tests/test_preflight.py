"""Mismatched teacher/student tokenizers are refused before any training starts."""

import json
import subprocess
import sys

import pytest

from sparse2dense.preflight import TokenizerMismatch, check_tokenizers, compare_tokenizers
from sparse2dense.spec import StageSpec
from sparse2dense.store import StageResult
from sparse2dense.toy import build_tokenizer


def _other_tokenizer():
    tok = build_tokenizer()
    tok.add_tokens(["<|extra|>"])
    tok.eos_token = "<|extra|>"
    return tok


def test_identical_tokenizers_pass():
    assert compare_tokenizers(build_tokenizer(), build_tokenizer()) == []


def test_different_vocabularies_are_named():
    with pytest.raises(TokenizerMismatch, match="vocabulary size") as err:
        check_tokenizers(build_tokenizer(), _other_tokenizer())
    assert "eos_token_id" in str(err.value)


def test_warmup_stage_refuses_before_training(tmp_path):
    build_tokenizer().save_pretrained(tmp_path / "teacher" / "model")
    _other_tokenizer().save_pretrained(tmp_path / "student" / "model")
    upstream = {
        role: StageResult(stage="base", name=role, key=role, path=str(tmp_path / role), manifest_digest="x")
        for role in ("teacher", "student")
    }
    upstream["rollouts"] = StageResult(
        stage="teacher_rollouts", name="r", key="r", path=str(tmp_path / "missing"), manifest_digest="x"
    )
    out = tmp_path / "out"
    spec = StageSpec(
        stage="warmup",
        name="warmup",
        key="k",
        config={"warmup": {}},
        semantic_config={},
        upstream=upstream,
        output_dir=str(out),
        seed=0,
    )
    (tmp_path / "spec.json").write_text(json.dumps(spec.model_dump(mode="json")))
    proc = subprocess.run(
        [sys.executable, "-m", "sparse2dense.stages.warmup", str(tmp_path / "spec.json")],
        capture_output=True,
        text=True,
        env={"HF_HUB_OFFLINE": "1", "PATH": ""},
    )
    assert proc.returncode != 0
    assert "TokenizerMismatch" in proc.stderr and "vocabulary size" in proc.stderr
    assert not (out / "manifest.json").exists() and not (out / "checkpoints").exists()
