"""Config schema: every shipped preset validates; bad input names the field."""

from pathlib import Path

import pytest

from sparse2dense.config import ConfigError, PipelineConfig, load_config
from sparse2dense.schema import semantic_dump

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


def test_every_field_has_a_description():
    from sparse2dense.explain import undocumented_fields
    from sparse2dense.sweep import SweepFile, SweepSpec

    assert undocumented_fields(PipelineConfig, SweepSpec, SweepFile) == []


def test_the_description_check_finds_an_undocumented_field():
    from pydantic import BaseModel, Field

    from sparse2dense.explain import undocumented_fields
    from sparse2dense.schema import Section

    class Inner(Section):
        documented: int = 1
        """Has help."""
        bare: int = 2

    class Outer(BaseModel):
        inner: list[Inner] | None = Field(None, description="a nested model behind list and Optional")

    assert undocumented_fields(Outer) == ["Inner.bare"]


def test_schema_carries_descriptions_and_closed_choices_as_enums():
    schema = PipelineConfig.model_json_schema()
    opd = schema["$defs"]["OPDSection"]["properties"]
    assert "over all processes" in opd["prompts_per_step"]["description"]
    warmup = schema["$defs"]["WarmupSection"]["properties"]["objective"]
    assert warmup["enum"] == ["forward_kl", "sft"] and warmup["description"]
    assert schema["$defs"]["GRPOSection"]["properties"]["labels"]["enum"] == ["stage1", "heldout", "replay"]


def test_prefect_forms_carry_the_descriptions():
    from flows.evaluate import evaluate
    from flows.post_train import post_train

    form = post_train.parameters.model_dump()
    assert form["definitions"]["OPDSection"]["properties"]["prompts_per_step"]["description"]
    assert form["properties"]["force_rerun"]["description"]  # from the flow's docstring
    assert evaluate.parameters.model_dump()["properties"]["role"]["enum"] == ["teacher", "student"]


def test_explain_marks_what_enters_the_cache_key():
    from sparse2dense.explain import explain, render

    cfg = load_config(next(p for p in CONFIGS if p.name == "toy.yaml"))
    lines = {line.path: line for line in explain(cfg)}
    assert lines["opd.steps"].in_key and lines["opd.steps"].value == cfg.opd.steps
    assert not lines["opd.logging_steps"].in_key
    assert not lines["opd.memory.bf16"].in_key  # inside a section that is not semantic
    assert not lines["launcher.kind"].in_key and lines["seed"].in_key
    assert all(line.description for line in lines.values())
    text = render(list(lines.values()))
    assert any(
        row.startswith("opd.prompts_per_step = 32") and "  key  Prompts" in row for row in text.splitlines()
    )


def test_unknown_eval_set_names_the_field_and_the_known_names():
    toy = next(p for p in CONFIGS if p.name == "toy.yaml")
    with pytest.raises(ConfigError, match=r"data\.eval_sets: 'nosuchset' is not a toy eval set.*toy_test"):
        load_config(toy, ['data.eval_sets=["nosuchset"]'])
    qwen = next(p for p in CONFIGS if p.name == "qwen3-8b-to-1.7b.yaml")
    with pytest.raises(
        ConfigError, match=r"data\.labeled_sources: 'dapo' is not a known dataset.*dapo_math_17k"
    ):
        load_config(qwen, ['data.labeled_sources=["dapo"]'])
    with pytest.raises(ConfigError, match=r"data\.eval_sets: 'extra/missing\.jsonl': no such file"):
        load_config(qwen, ['data.eval_sets=["math500", "extra/missing.jsonl"]'])


def test_dataset_paths_and_hub_ids_are_accepted(tmp_path):
    qwen = next(p for p in CONFIGS if p.name == "qwen3-8b-to-1.7b.yaml")
    local = tmp_path / "mine.jsonl"
    local.write_text("{}\n")
    cfg = load_config(qwen, [f'data.eval_sets=["math500", "{local}", "HuggingFaceH4/MATH-500"]'])
    assert cfg.data.eval_sets[1] == str(local)


def test_yaml_syntax_error_names_file_line_and_column(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("teacher:\n  toy: {}\nstudent:\n\ttoy: {}\n")
    with pytest.raises(ConfigError, match=rf"{bad} is not valid YAML: line 4, column 1: found character"):
        load_config(bad)
    bad.write_text("teacher: {toy: {}\nstudent: {toy: {}}\n")
    with pytest.raises(ConfigError, match=r"line 2, column 1: .*flow mapping started at line 1, column 10"):
        load_config(bad)


def test_override_with_invalid_yaml_value_is_named():
    toy = next(p for p in CONFIGS if p.name == "toy.yaml")
    with pytest.raises(ConfigError, match=r"override 'opd\.steps=\[1': the value is not valid YAML: line 1"):
        load_config(toy, ["opd.steps=[1"])


def test_student_pretraining_length_must_lie_in_the_world():
    toy = next(p for p in CONFIGS if p.name == "toy.yaml")
    with pytest.raises(ConfigError, match=r"base\.student_max_terms \(3\) .* \(4\.\.8\)"):
        load_config(toy, ["base.student_max_terms=3"])
    assert load_config(toy, ["base.student_max_terms=8"]).base.student_max_terms == 8
