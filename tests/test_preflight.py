"""Mismatched teacher/student tokenizers are refused before any training starts."""

import json
import subprocess
import sys

import pytest

from sparse2dense.preflight import PROBE, TokenizerMismatch, check_tokenizers, compare_tokenizers
from sparse2dense.spec import StageSpec
from sparse2dense.store import StageResult
from sparse2dense.toy import build_tokenizer


def _other_tokenizer():
    tok = build_tokenizer()
    tok.add_tokens(["<|extra|>"])
    tok.eos_token = "<|extra|>"
    return tok


def _permuted_tokenizer():
    """Same size, same special tokens and template, but the characters numbered the other way round."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from sparse2dense.toy import BOS, CHAT_TEMPLATE, EOS, PAD

    base = build_tokenizer()
    alphabet = sorted((t for t in base.get_vocab() if t not in (PAD, BOS, EOS)), reverse=True)
    core = Tokenizer(
        models.WordLevel(vocab={t: i for i, t in enumerate([PAD, BOS, EOS, *alphabet])}, unk_token=PAD)
    )
    core.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    core.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token=PAD, eos_token=EOS, unk_token=PAD)
    tok.add_special_tokens({"additional_special_tokens": [BOS]})
    tok.chat_template = CHAT_TEMPLATE
    return tok


def test_identical_tokenizers_pass():
    assert compare_tokenizers(build_tokenizer(), build_tokenizer()) == []


def test_different_vocabularies_are_named():
    with pytest.raises(TokenizerMismatch, match="vocabulary size") as err:
        check_tokenizers(build_tokenizer(), _other_tokenizer())
    assert "eos_token_id" in str(err.value)


def test_same_size_different_vocabulary_is_caught_by_ids_and_probe():
    problems = compare_tokenizers(build_tokenizer(), _permuted_tokenizer())
    text = "; ".join(problems)
    assert "vocabulary size" not in text and "eos_token_id" not in text and "chat template" not in text
    assert "tokens map to different ids" in text
    assert "probe string" in text and "tokenizes differently from token 0" in text


def test_chat_template_difference_is_located():
    other = build_tokenizer()
    other.chat_template = other.chat_template.replace("assistant", "bot")
    (problem,) = compare_tokenizers(build_tokenizer(), other)
    assert problem.startswith("chat templates differ from character") and 'student "bot' in problem


def test_probe_covers_digits_latex_and_unicode():
    assert "\\boxed{" in PROBE and any(ord(c) > 127 for c in PROBE) and any(c.isdigit() for c in PROBE)


@pytest.mark.parametrize(
    ("stage", "other", "named"),
    [
        ("warmup", _other_tokenizer, "vocabulary size"),
        ("opd", _permuted_tokenizer, "probe string"),
    ],
)
def test_bridge_stage_refuses_before_training(tmp_path, stage, other, named):
    build_tokenizer().save_pretrained(tmp_path / "teacher" / "model")
    other().save_pretrained(tmp_path / "student" / "model")
    upstream = {
        role: StageResult(stage="base", name=role, key=role, path=str(tmp_path / role), manifest_digest="x")
        for role in ("teacher", "student")
    }
    for role in ("rollouts", "data"):
        upstream[role] = StageResult(
            stage="x", name=role, key=role, path=str(tmp_path / "missing"), manifest_digest="x"
        )
    out = tmp_path / "out"
    spec = StageSpec(
        stage=stage,
        name=stage,
        key="k",
        config={stage: {}} | ({"prompt": {"template": "{problem}"}} if stage == "opd" else {}),
        semantic_config={},
        upstream=upstream,
        output_dir=str(out),
        seed=0,
    )
    (tmp_path / "spec.json").write_text(json.dumps(spec.model_dump(mode="json")))
    proc = subprocess.run(
        [sys.executable, "-m", f"sparse2dense.stages.{stage}", str(tmp_path / "spec.json")],
        capture_output=True,
        text=True,
        env={"HF_HUB_OFFLINE": "1", "PATH": ""},
    )
    assert proc.returncode != 0
    assert "TokenizerMismatch" in proc.stderr and named in proc.stderr
    assert not (out / "manifest.json").exists() and not (out / "checkpoints").exists()
