"""Config schema: every shipped preset validates; bad input names the field."""

from pathlib import Path

import pytest

from sparse2dense.config import ConfigError, PipelineConfig, load_config, semantic_dump

CONFIGS = sorted(p for p in Path(__file__).resolve().parents[1].joinpath("configs").glob("*.yaml"))


def test_presets_exist():
    names = {p.name for p in CONFIGS}
    assert {"toy.yaml", "qwen3-8b-to-1.7b.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_preset_validates(path):
    cfg = load_config(path)
    assert isinstance(cfg, PipelineConfig)


def test_misspelled_key_names_the_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("teacher: {toy: {}}\nstudent: {toy: {}}\nopd: {stepz: 3}\n")
    with pytest.raises(ConfigError, match=r"opd\.stepz"):
        load_config(bad)


def test_out_of_range_value_names_the_field():
    with pytest.raises(ConfigError, match=r"eval\.temperature"):
        load_config(CONFIGS[-1], ["eval.temperature=9"])


def test_wrong_type_names_nested_field():
    toy = next(p for p in CONFIGS if p.name == "toy.yaml")
    with pytest.raises(ConfigError, match=r"teacher\.toy\.hidden_size"):
        load_config(toy, ["teacher.toy.hidden_size=many"])


def test_missing_file_names_the_path(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(missing)


def test_override_sets_value_and_config_is_frozen():
    toy = next(p for p in CONFIGS if p.name == "toy.yaml")
    cfg = load_config(toy, ["opd.steps=7", "warmup.objective=sft"])
    assert cfg.opd.steps == 7 and cfg.warmup.objective == "sft"
    with pytest.raises(Exception):  # noqa: B017 - pydantic raises ValidationError on frozen assignment
        cfg.opd.steps = 8  # type: ignore[misc]


def test_semantic_dump_leaves_out_logging_cadence():
    cfg = load_config(next(p for p in CONFIGS if p.name == "toy.yaml"))
    semantic = semantic_dump(cfg.opd)
    assert "steps" in semantic
    assert "logging_steps" not in semantic and "checkpoint_every" not in semantic


def test_model_needs_exactly_one_source():
    with pytest.raises(ConfigError, match="teacher"):
        from sparse2dense.config import validate_config

        validate_config({"teacher": {}, "student": {"toy": {}}})
