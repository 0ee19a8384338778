"""GGUF model files: converted once per content digest into a plain safetensors model, cached in the
store, refused with a clear error when missing, damaged or changed since the plan."""

import json
import shutil

import pytest
import torch

from sparse2dense import gguf
from sparse2dense.config import validate_config
from sparse2dense.gguf import GGUFError, convert_gguf, converted_dir, file_digest, is_converted
from sparse2dense.pipeline import plan_keys
from sparse2dense.preflight import model_source_problem

SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def test_conversion_is_a_plain_safetensors_model_keyed_by_digest(smollm2_gguf, smollm2_store, smollm2_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert smollm2_model == converted_dir(smollm2_store, SMOLLM2_SHA256)
    assert is_converted(smollm2_model)
    assert json.loads((smollm2_model / gguf.SOURCE_FILE).read_text())["sha256"] == SMOLLM2_SHA256
    assert (smollm2_model / "model.safetensors").is_file()
    assert not list(smollm2_model.glob("*.gguf")) and not list(smollm2_model.glob("*.bin"))
    config = json.loads((smollm2_model / "config.json").read_text())
    assert "quantization_config" not in config  # a quantized marker would make it unsaveable
    assert config["num_hidden_layers"] == 30 and config["vocab_size"] == 49152

    model = AutoModelForCausalLM.from_pretrained(smollm2_model)
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    tokenizer = AutoTokenizer.from_pretrained(smollm2_model)
    ids = tokenizer("What is 3 + 4?", return_tensors="pt")
    with torch.no_grad():
        converted_logits = model(**ids).logits
    reference = AutoModelForCausalLM.from_pretrained(
        str(smollm2_gguf.parent), gguf_file=smollm2_gguf.name, dtype=torch.float32
    )
    with torch.no_grad():
        assert torch.equal(converted_logits, reference(**ids).logits)


def test_a_second_use_reads_the_cache(smollm2_gguf, smollm2_store, monkeypatch):
    def must_not_convert(*_):
        raise AssertionError("converted again")

    monkeypatch.setattr(gguf, "_convert", must_not_convert)
    assert convert_gguf(smollm2_gguf, smollm2_store) == converted_dir(smollm2_store, SMOLLM2_SHA256)


def test_a_truncated_file_is_refused_naming_it(smollm2_gguf, tmp_path):
    damaged = tmp_path / "cut.gguf"
    with open(smollm2_gguf, "rb") as src:
        damaged.write_bytes(src.read(5_000_000))
    with pytest.raises(GGUFError, match=f"model file {damaged} could not be read as a GGUF model"):
        convert_gguf(damaged, tmp_path / "store")
    digest = file_digest(damaged)
    assert not is_converted(converted_dir(tmp_path / "store", digest))
    assert not [p for p in (tmp_path / "store" / gguf.MODELS_DIR).iterdir() if not p.name.endswith(".lock")]


def test_a_file_that_is_not_gguf_or_absent_is_named(tmp_path):
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(GGUFError, match="is not a GGUF file"):
        convert_gguf(fake, tmp_path)
    assert "is not a GGUF file" in model_source_problem(str(fake))
    missing = tmp_path / "nowhere.gguf"
    with pytest.raises(GGUFError, match=f"model file not found: {missing}"):
        convert_gguf(missing, tmp_path)
    assert model_source_problem(str(missing)) == f"model file not found: {missing}"


def test_a_file_changed_since_the_plan_is_refused(smollm2_gguf, smollm2_store):
    with pytest.raises(GGUFError, match="changed since the run was planned"):
        convert_gguf(smollm2_gguf, smollm2_store, expected_digest="0" * 64)


def _config(path, **student):
    return validate_config(
        {
            "teacher": {"name_or_path": str(path)},
            "student": {"name_or_path": str(path), **student},
            "data": {"kind": "words", "eval_sets": ["words_test"]},
            "teacher_rl": {"prompts_per_step": 4, "max_completion_length": 32},
        }
    )


def test_keys_follow_the_file_content_not_its_path(smollm2_gguf, tmp_path):
    copy = tmp_path / "same.gguf"
    shutil.copyfile(smollm2_gguf, copy)
    original = plan_keys(_config(copy))
    with open(copy, "r+b") as fh:  # one byte of tensor data changed: another model
        fh.seek(-1, 2)
        last = fh.read(1)
        fh.seek(-1, 2)
        fh.write(bytes([last[0] ^ 1]))
    changed = plan_keys(_config(copy))
    assert original["data_prep"] == changed["data_prep"]  # reads no model
    assert original["teacher_rl"] != changed["teacher_rl"]
    assert original["eval/student_final"] != changed["eval/student_final"]


def test_sha256_pins_gguf_files_only():
    from sparse2dense.config_files import ConfigError

    with pytest.raises(ConfigError, match="sha256 pins a .gguf name_or_path only"):
        validate_config(
            {
                "teacher": {"name_or_path": "Qwen/Qwen3-8B", "sha256": "a" * 64},
                "student": {"name_or_path": "x/y"},
            }
        )
