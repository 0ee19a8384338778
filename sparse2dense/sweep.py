"""Ablation sweeps: one base config plus named arms, each a set of overrides or switched-off stages.

A sweep file names its base preset (a path relative to the sweep file), overrides shared by every
arm, the reference arm that deltas are taken against, named comparisons between arms, the seeds and
the arms. `load_sweep` resolves it into a typed `SweepSpec` (the `ablation-sweep` flow's parameter,
so the Prefect UI renders it as a form); `arm_runs` validates every arm x seed into a full
`PipelineConfig`: the arm's overrides with `seed` set, exactly what `s2d run BASE <overrides> --set
seed=N` would build, so the two share every stage key. Because keys chain on upstream keys,
`sweep_plan` knows before anything runs which stages the runs share and how many distinct stages
the sweep will compute, against the naive count of running every arm x seed from scratch.

    s2d sweep configs/sweeps/toy-ablations.yaml [--arm NAME ...] [--seeds 1,2,3] [--set section.field=value ...]
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from sparse2dense.config import PipelineConfig, Seed, validate_config
from sparse2dense.config_files import ConfigError, apply_overrides, format_errors, read_yaml_mapping
from sparse2dense.graph import current
from sparse2dense.pipeline import plan_keys
from sparse2dense.schema import NAME_JSON_SCHEMA, NAME_MAX_LENGTH, Name, check_name
from sparse2dense.sections import GRPO_RECIPE


def _optional_stage(stage: str) -> str:
    optional = current().optional()
    if stage not in optional:
        raise ValueError(f"{stage!r} cannot be switched off; the optional stages are {optional}")
    return stage


class Arm(BaseModel):
    """One arm: overrides (`section.field: value`) on the base config and stages switched off."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    description: str = Field("", description="What the arm changes and why, in one line.")
    set: dict[str, Any] = Field(
        default_factory=dict, description="Overrides of the base config: section.field -> value."
    )
    disable: list[Annotated[str, AfterValidator(_optional_stage)]] = Field(
        default_factory=list,
        description="Optional stages switched off in this arm (teacher_rl, warmup, opd, student_rl).",
    )

    @model_validator(mode="after")
    def _leaves_seed_and_recipe_alone(self) -> Arm:
        if "seed" in self.set:
            raise ValueError("an arm does not set 'seed': seeds are the sweep's own dimension (seeds: [...])")
        if self.set.get("student_rl.recipe") == "teacher_rl":
            clash = sorted(f for f in GRPO_RECIPE if f"student_rl.{f}" in self.set)
            if clash:
                raise ValueError(
                    f"student_rl.recipe: teacher_rl takes {clash} from teacher_rl; do not set them"
                )
        return self


def check_arm_names(arms: dict[str, Arm], base_name: str | None = None) -> dict[str, Arm]:
    """Arm names are names (`Name`: each becomes a directory of its runs and part of the run's name
    `BASE-ARM`, which must stay a name too)."""
    for arm in arms:
        try:
            check_name(arm)
        except ValueError as err:
            raise ValueError(f"arm {err}") from None
        if base_name is not None and len(base_name) + 1 + len(arm) > NAME_MAX_LENGTH:
            raise ValueError(
                f"arm {arm!r}: the run name {base_name}-{arm} is longer than {NAME_MAX_LENGTH} characters"
            )
    return arms


class Comparison(BaseModel):
    """A paired delta the report states, a - b, with both arms' label budgets (equal or not)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    a: str = Field(description="arm whose score comes first in a - b")
    b: str = Field(description="arm subtracted")


BUDGET_FIELD = "teacher_rl.max_labels"  # direct GRPO takes it too, through student_rl.recipe: teacher_rl


class LabelBudgets(BaseModel):
    """The label budget as a sweep dimension: the named arms again at each budget (stage-1 labels
    read by GRPO, `teacher_rl.max_labels`), as arms `<arm>.labels<N>`; every comparison between two
    of them is repeated at each budget. Stages before teacher RL are shared across budgets."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    budgets: list[Annotated[int, Field(gt=0)]] = Field(
        description="Stage-1 label budgets besides the base config's own (distinct, positive)."
    )
    arms: list[str] = Field(description="Arms run again at every budget.")

    @field_validator("budgets")
    @classmethod
    def _distinct(cls, budgets: list[int]) -> list[int]:
        if len(set(budgets)) != len(budgets):
            raise ValueError(f"budgets must be distinct; got {budgets}")
        return budgets


def budget_arm_name(arm: str, budget: int) -> str:
    return f"{arm}.labels{budget}"


def with_label_budgets(
    arms: dict[str, Arm], comparisons: list[Comparison], budgets: LabelBudgets | None
) -> tuple[dict[str, Arm], list[Comparison]]:
    """The arms and comparisons with the budget dimension spelled out (a budget arm keeps its arm's
    overrides and switches and adds `teacher_rl.max_labels`)."""
    if budgets is None:
        return arms, comparisons
    unknown = sorted(set(budgets.arms) - set(arms))
    if unknown:
        raise ValueError(f"label_budgets.arms: {unknown} are not arms; the arms are {sorted(arms)}")
    out, more = dict(arms), list(comparisons)
    for budget in budgets.budgets:
        for name in budgets.arms:
            arm = arms[name]
            if BUDGET_FIELD in arm.set:
                raise ValueError(f"label_budgets.arms: {name!r} sets {BUDGET_FIELD} itself")
            out[budget_arm_name(name, budget)] = Arm(
                description=f"{arm.description} [{budget} stage-1 labels]".strip(),
                set={**arm.set, BUDGET_FIELD: budget},
                disable=arm.disable,
            )
        more += [
            Comparison(a=budget_arm_name(c.a, budget), b=budget_arm_name(c.b, budget))
            for c in comparisons
            if c.a in budgets.arms and c.b in budgets.arms
        ]
    return out, more


class SweepSpec(BaseModel):
    """A resolved sweep: the base config itself (not its path), the arms, seeds and comparisons."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Name = Field(
        description="Sweep name: its MLflow experiment and report directory runs/sweeps/NAME/."
    )
    base: PipelineConfig = Field(description="The config every arm starts from.")
    arms: dict[str, Arm] = Field(
        description="Arm name (a name, like `name`) -> overrides and switched-off stages; run in this order.",
        json_schema_extra={"propertyNames": NAME_JSON_SCHEMA},
    )
    reference: str | None = Field(None, description="Arm that deltas are taken against (none: the first).")
    seeds: list[Seed] = Field(
        default_factory=list, description="Seeds every arm runs with (distinct); empty: the base's seed."
    )
    comparisons: list[Comparison] = Field(
        default_factory=list, description="Paired deltas a - b reported besides each arm vs the reference."
    )
    label_budgets: LabelBudgets | None = Field(
        None,
        description="Arms repeated at other stage-1 label budgets (already spelled out in `arms` and "
        "`comparisons`; kept so the report can group them).",
    )

    @field_validator("arms")
    @classmethod
    def _arm_names(cls, arms: dict[str, Arm], info: ValidationInfo) -> dict[str, Arm]:
        base = info.data.get("base")
        return check_arm_names(arms, base.name if base is not None else None)

    @model_validator(mode="after")
    def _names_are_arms(self) -> SweepSpec:
        if not self.arms:
            raise ValueError("a sweep needs at least one arm")
        if self.reference is not None and self.reference not in self.arms:
            raise ValueError(f"reference arm {self.reference!r} is not one of {sorted(self.arms)}")
        for i, comparison in enumerate(self.comparisons):
            for side in ("a", "b"):
                if getattr(comparison, side) not in self.arms:
                    raise ValueError(
                        f"comparisons.{i}.{side}: {getattr(comparison, side)!r} is not one of {sorted(self.arms)}"
                    )
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct; got {self.seeds}")
        if self.label_budgets is not None:
            missing = [
                budget_arm_name(arm, budget)
                for budget in self.label_budgets.budgets
                for arm in self.label_budgets.arms
                if budget_arm_name(arm, budget) not in self.arms
            ]
            if missing:
                raise ValueError(f"label_budgets: arms {missing} are missing (load_sweep spells them out)")
        return self

    @property
    def reference_arm(self) -> str:
        return self.reference or next(iter(self.arms))

    @property
    def run_seeds(self) -> list[int]:
        return self.seeds or [self.base.seed]


def arm_overrides(arm: Arm) -> list[str]:
    """The arm as `--set` style overrides, switched-off stages last so they always win."""
    sets = [f"{dotted}={json.dumps(value)}" for dotted, value in arm.set.items()]
    sections = [current().stage(stage).section for stage in arm.disable]
    return sets + [f"{section}.enabled=false" for section in sections]


def arm_config(spec: SweepSpec, arm_name: str, seed: int | None = None) -> PipelineConfig:
    """The full config of one arm at one seed (default: the base's); every arm of a sweep logs into
    the sweep's experiment. Name and experiment are not semantic, so the keys are those of
    `s2d run BASE <arm overrides> --set seed=N`."""
    arm = spec.arms[arm_name]
    data = spec.base.model_dump(mode="json")
    data["name"] = f"{spec.base.name}-{arm_name}"
    data.setdefault("tracking", {})["experiment"] = spec.base.tracking.experiment or spec.name
    seeded = [f"seed={seed}"] if seed is not None else []
    try:
        return validate_config(
            apply_overrides(data, arm_overrides(arm) + seeded), f"(sweep {spec.name}, arm {arm_name})"
        )
    except ConfigError as err:
        raise ConfigError(f"{err}\n  (from arms.{arm_name}.set / arms.{arm_name}.disable)") from None


def _chosen_arms(spec: SweepSpec, only: list[str] | None) -> list[str]:
    unknown = sorted(set(only or []) - set(spec.arms))
    if unknown:
        raise ConfigError(f"unknown arm(s) {unknown}; the sweep {spec.name} has {list(spec.arms)}")
    return [name for name in spec.arms if not only or name in only]


def arm_configs(spec: SweepSpec, only: list[str] | None = None) -> dict[str, PipelineConfig]:
    """Every chosen arm at the base's seed."""
    return {name: arm_config(spec, name) for name in _chosen_arms(spec, only)}


class ArmRun(BaseModel):
    """One arm at one seed: a `post-train` run of the sweep."""

    model_config = ConfigDict(frozen=True)

    arm: Name  # its runs' directory is runs/flows/<flow run>/ARM@seedN/
    seed: int
    config: PipelineConfig

    @property
    def label(self) -> str:
        return f"{self.arm}@seed{self.seed}"


def arm_runs(spec: SweepSpec, only: list[str] | None = None) -> list[ArmRun]:
    """Every chosen arm x every seed, seed by seed (the first seed's arms complete first)."""
    arms = _chosen_arms(spec, only)
    return [
        ArmRun(arm=arm, seed=seed, config=arm_config(spec, arm, seed))
        for seed in spec.run_seeds
        for arm in arms
    ]


class SweepPlan(BaseModel):
    """What a sweep will compute, known before anything runs (runs named `arm@seedN`)."""

    stages_per_run: dict[str, int]
    naive_stage_count: int
    distinct_stage_keys: int
    shared: dict[str, list[str]]  # stage key -> runs that need it (only keys needed by >1 run)


def sweep_plan(runs: list[ArmRun]) -> SweepPlan:
    needed_by: dict[str, list[str]] = {}
    per_run: dict[str, int] = {}
    for run in runs:
        keys = plan_keys(run.config)
        per_run[run.label] = len(keys)
        for key in keys.values():
            needed_by.setdefault(key, []).append(run.label)
    return SweepPlan(
        stages_per_run=per_run,
        naive_stage_count=sum(per_run.values()),
        distinct_stage_keys=len(needed_by),
        shared={k: arms for k, arms in needed_by.items() if len(arms) > 1},
    )


class SweepFile(BaseModel):
    """The file format: like `SweepSpec`, but `base` is a preset path and `set` is shared overrides."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Name = Field(
        description="Sweep name: its MLflow experiment and report directory runs/sweeps/NAME/."
    )
    base: str = Field(description="Path of the base preset, relative to the sweep file.")
    set: dict[str, Any] = Field(
        default_factory=dict, description="Overrides shared by every arm: section.field -> value."
    )
    reference: str | None = Field(None, description="Arm that deltas are taken against (none: the first).")
    seeds: list[Seed] = Field(
        default_factory=list, description="Seeds every arm runs with; empty: the base's seed."
    )
    comparisons: list[Comparison] = Field(
        default_factory=list, description="Paired deltas a - b reported besides each arm vs the reference."
    )
    label_budgets: LabelBudgets | None = Field(
        None, description="Arms run again at other stage-1 label budgets, as arms ARM.labelsN."
    )
    arms: dict[str, Arm] = Field(
        description="Arm name (a name, like `name`) -> overrides and switched-off stages; run in this order.",
        json_schema_extra={"propertyNames": NAME_JSON_SCHEMA},
    )

    @field_validator("arms")
    @classmethod
    def _arm_names(cls, arms: dict[str, Arm]) -> dict[str, Arm]:
        return check_arm_names(arms)


def load_sweep(
    path: str | Path, overrides: list[str] | None = None, seeds: list[int] | None = None
) -> SweepSpec:
    """Read a sweep file; `overrides` apply to the base config of every arm (like `s2d run --set`),
    `seeds` (when given) replace the file's seeds."""
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
        arms, comparisons = with_label_budgets(sweep.arms, sweep.comparisons, sweep.label_budgets)
    except ValueError as err:
        raise ConfigError(f"sweep {path}: {err}") from None
    try:
        spec = SweepSpec(
            name=sweep.name,
            base=base,
            arms=arms,
            reference=sweep.reference,
            seeds=sweep.seeds if seeds is None else seeds,
            comparisons=comparisons,
            label_budgets=sweep.label_budgets,
        )
    except ValidationError as err:
        raise ConfigError(format_errors(err, str(path), "sweep")) from None
    arm_configs(spec)  # every arm must validate before anything runs
    return spec
