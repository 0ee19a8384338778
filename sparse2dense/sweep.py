"""Ablation sweeps: one base config plus named arms, each a set of overrides or switched-off stages.

A sweep file names its base preset (a path relative to the sweep file), overrides shared by every
arm, the reference arm that deltas are taken against, and the arms. `load_sweep` resolves it into a
typed `SweepSpec` (the `ablation-sweep` flow's parameter, so the Prefect UI renders it as a form);
`arm_configs` validates each arm into a full `PipelineConfig`. Because stage keys chain on upstream
keys, `sweep_plan` knows before anything runs which stages the arms share and how many distinct
stages the sweep will compute, against the naive count of running every arm from scratch.

    s2d sweep configs/sweeps/toy-ablations.yaml [--arm NAME ...] [--set section.field=value ...]
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sparse2dense.config import (
    ConfigError,
    PipelineConfig,
    apply_overrides,
    format_errors,
    read_yaml_mapping,
    validate_config,
)
from sparse2dense.pipeline import plan_keys

OptionalStage = Literal["teacher_rl", "warmup", "opd", "student_rl"]


class Arm(BaseModel):
    """One arm: overrides (`section.field: value`) on the base config and stages switched off."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    description: str = Field("", description="What the arm changes and why, in one line.")
    set: dict[str, Any] = Field(
        default_factory=dict, description="Overrides of the base config: section.field -> value."
    )
    disable: list[OptionalStage] = Field(default_factory=list, description="Stages switched off in this arm.")


class SweepSpec(BaseModel):
    """A resolved sweep: the base config itself (not its path) and the arms."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="Sweep name: its MLflow experiment and report directory runs/sweeps/NAME/.")
    base: PipelineConfig = Field(description="The config every arm starts from.")
    arms: dict[str, Arm] = Field(
        description="Arm name -> overrides and switched-off stages; run in this order."
    )
    reference: str | None = Field(None, description="Arm that deltas are taken against (none: the first).")

    @model_validator(mode="after")
    def _reference_is_an_arm(self) -> SweepSpec:
        if not self.arms:
            raise ValueError("a sweep needs at least one arm")
        if self.reference is not None and self.reference not in self.arms:
            raise ValueError(f"reference arm {self.reference!r} is not one of {sorted(self.arms)}")
        return self

    @property
    def reference_arm(self) -> str:
        return self.reference or next(iter(self.arms))


def arm_overrides(arm: Arm) -> list[str]:
    """The arm as `--set` style overrides, switched-off stages last so they always win."""
    sets = [f"{dotted}={json.dumps(value)}" for dotted, value in arm.set.items()]
    return sets + [f"{stage}.enabled=false" for stage in arm.disable]


def arm_config(spec: SweepSpec, arm_name: str) -> PipelineConfig:
    """The full config of one arm; every arm of a sweep logs into the sweep's experiment."""
    arm = spec.arms[arm_name]
    data = spec.base.model_dump(mode="json")
    data["name"] = f"{spec.base.name}-{arm_name}"
    data.setdefault("tracking", {})["experiment"] = spec.base.tracking.experiment or spec.name
    try:
        return validate_config(
            apply_overrides(data, arm_overrides(arm)), f"(sweep {spec.name}, arm {arm_name})"
        )
    except ConfigError as err:
        raise ConfigError(f"{err}\n  (from arms.{arm_name}.set / arms.{arm_name}.disable)") from None


def arm_configs(spec: SweepSpec, only: list[str] | None = None) -> dict[str, PipelineConfig]:
    unknown = sorted(set(only or []) - set(spec.arms))
    if unknown:
        raise ConfigError(f"unknown arm(s) {unknown}; the sweep {spec.name} has {list(spec.arms)}")
    names = [name for name in spec.arms if not only or name in only]
    return {name: arm_config(spec, name) for name in names}


class SweepPlan(BaseModel):
    """What a sweep will compute, known before anything runs."""

    stages_per_arm: dict[str, int]
    naive_stage_count: int
    distinct_stage_keys: int
    shared: dict[str, list[str]]  # stage key -> arms that need it (only keys needed by >1 arm)


def sweep_plan(configs: dict[str, PipelineConfig]) -> SweepPlan:
    needed_by: dict[str, list[str]] = {}
    per_arm: dict[str, int] = {}
    for arm, cfg in configs.items():
        keys = plan_keys(cfg)
        per_arm[arm] = len(keys)
        for key in keys.values():
            needed_by.setdefault(key, []).append(arm)
    return SweepPlan(
        stages_per_arm=per_arm,
        naive_stage_count=sum(per_arm.values()),
        distinct_stage_keys=len(needed_by),
        shared={k: arms for k, arms in needed_by.items() if len(arms) > 1},
    )


class SweepFile(BaseModel):
    """The file format: like `SweepSpec`, but `base` is a preset path and `set` is shared overrides."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="Sweep name: its MLflow experiment and report directory runs/sweeps/NAME/.")
    base: str = Field(description="Path of the base preset, relative to the sweep file.")
    set: dict[str, Any] = Field(
        default_factory=dict, description="Overrides shared by every arm: section.field -> value."
    )
    reference: str | None = Field(None, description="Arm that deltas are taken against (none: the first).")
    arms: dict[str, Arm] = Field(
        description="Arm name -> overrides and switched-off stages; run in this order."
    )


def load_sweep(path: str | Path, overrides: list[str] | None = None) -> SweepSpec:
    """Read a sweep file; `overrides` apply to the base config of every arm (like `s2d run --set`)."""
    path = Path(path)
    try:
        sweep = SweepFile.model_validate(read_yaml_mapping(path, "sweep"))
    except ValidationError as err:
        raise ConfigError(format_errors(err, str(path), "sweep")) from None
    base_path = (path.parent / sweep.base).resolve()
    if not base_path.is_file():
        raise ConfigError(f"sweep {path}: base config not found: {base_path} (field 'base')")
    base_data = read_yaml_mapping(base_path)
    shared = [f"{k}={json.dumps(v)}" for k, v in sweep.set.items()] + list(overrides or [])
    base = validate_config(apply_overrides(base_data, shared), str(base_path))
    try:
        spec = SweepSpec(name=sweep.name, base=base, arms=sweep.arms, reference=sweep.reference)
    except ValidationError as err:
        raise ConfigError(format_errors(err, str(path), "sweep")) from None
    arm_configs(spec)  # every arm must validate before anything runs
    return spec
