"""Names that become directories and MLflow entries: a config's `name`, a sweep's `name` and its arm
names are refused, naming the field, unless they are plain names (no path separators, not dots
only, no leading '.' or '-', bounded length); every shipped config and sweep keeps valid names; and
two configs never share a registered model."""

import json

import pytest
from pydantic import ValidationError

from sparse2dense.config import ConfigError, load_config
from sparse2dense.sweep import Arm, SweepSpec, arm_runs, load_sweep
from tests.conftest import ROOT, TOY

CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
SWEEPS = sorted((ROOT / "configs" / "sweeps").glob("*.yaml"))
NOT_NAMES = [
    "../../../tmp/x",
    "qwen3/8b",
    "a\\b",
    "team a",
    "..",
    ".",
    ".hidden",
    "-rf",
    "models:x",
    "naïve",
    "x" * 65,
    "",
]


def _is_name(value: str) -> bool:
    from sparse2dense.schema import check_name

    try:
        check_name(value)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_has_a_valid_name(path):
    assert _is_name(load_config(path).name)


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.name)
def test_every_shipped_sweep_has_valid_sweep_arm_and_run_names(path):
    sweep = load_sweep(path)
    assert _is_name(sweep.name) and all(_is_name(arm) for arm in sweep.arms)
    assert all(_is_name(run.config.name) for run in arm_runs(sweep))  # BASE-ARM


@pytest.mark.parametrize("bad", NOT_NAMES, ids=repr)
def test_a_config_name_that_is_not_a_name_is_refused_naming_the_field(bad):
    with pytest.raises(ConfigError, match=r"(?m)^  name: .* is not a valid name"):
        load_config(TOY, [f"name={json.dumps(bad)}"])


def _sweep_file(tmp_path, name: str = "s", arm: str = "a"):
    path = tmp_path / "sweep.yaml"
    path.write_text(f"name: {json.dumps(name)}\nbase: {TOY}\narms:\n  {json.dumps(arm)}: {{}}\n")
    return path


@pytest.mark.parametrize("bad", NOT_NAMES, ids=repr)
def test_a_sweep_name_that_is_not_a_name_is_refused_naming_the_field(tmp_path, bad):
    with pytest.raises(ConfigError, match=r"(?m)^  name: .* is not a valid name"):
        load_sweep(_sweep_file(tmp_path, name=bad))
    with pytest.raises(ValidationError, match="is not a valid name"):
        SweepSpec(name=bad, base=load_config(TOY), arms={"a": Arm()})


@pytest.mark.parametrize("bad", NOT_NAMES, ids=repr)
def test_an_arm_name_that_is_not_a_name_is_refused_naming_the_arm(tmp_path, bad):
    with pytest.raises(ConfigError, match=r"(?m)^  arms: arm .* is not a valid name"):
        load_sweep(_sweep_file(tmp_path, arm=bad))
    with pytest.raises(ValidationError, match="arm .* is not a valid name"):
        SweepSpec(name="s", base=load_config(TOY), arms={bad: Arm()})


def test_an_arm_whose_run_name_would_be_too_long_is_refused(tmp_path):
    base = load_config(TOY, ["name=" + "b" * 40])
    with pytest.raises(ValidationError, match=r"arm 'a{30}': the run name b{40}-a{30} is longer than 64"):
        SweepSpec(name="s", base=base, arms={"a" * 30: Arm()})
    assert SweepSpec(name="s", base=base, arms={"a" * 23: Arm()}).arms  # 40 + 1 + 23 = 64


def test_names_that_sanitised_alike_stay_distinct_registered_models(tmp_path):
    """Names that differ only where a sanitiser would have replaced characters either are refused
    or keep their own registered model; MLflow takes every registered name as it is."""
    from tasks import tracking
    from tasks.registry import registered_name

    for bad in ("qwen3/8b", "team a"):
        with pytest.raises(ConfigError, match="is not a valid name"):
            load_config(TOY, [f"name={json.dumps(bad)}"])
    names = ["qwen3-8b", "qwen3_8b", "qwen3.8b", "team-a", "team_a", "Team-a", "x" * 64]
    registered = [registered_name(load_config(TOY, [f"name={n}"]).name) for n in names]
    assert registered == [f"{n}-student" for n in names]
    client = tracking.connect(f"sqlite:///{tmp_path / 'mlflow.db'}")
    for name in registered:
        client.create_registered_model(name)
    assert sorted(m.name for m in client.search_registered_models()) == sorted(registered)
