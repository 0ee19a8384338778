"""The one configuration schema, assembled: the whole pipeline's config from the sections
(`sections.py`), the launcher and schedule (`placement.py`), and the checks that span sections.

A YAML preset is loaded with `yaml.safe_load`, overridden with `section.field=value` pairs and
validated once; an error names the dotted path of the offending field. Fields marked
`semantic=False` (logging cadence, checkpoint cadence, run names) do not change a stage's output
and are left out of its cache key (see `sparse2dense.schema`). The checks that depend on which
stages run (every planned training stage's batch splits over its processes) read the stage graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, ValidationError, model_validator

from sparse2dense.config_files import ConfigError, apply_overrides, format_errors, read_yaml_mapping
from sparse2dense.graph import current, is_training
from sparse2dense.launch import split_batch, world_size_of
from sparse2dense.pipeline import plan_stages, stage_inputs
from sparse2dense.placement import LauncherSection, ScheduleSection
from sparse2dense.schema import NON_SEMANTIC, Name, Section
from sparse2dense.sections import (
    BaseSection,
    DataSection,
    EvalSection,
    GRPOSection,
    MemoryPlan,
    ModelSpec,
    OPDSection,
    PruneSpec,
    RolloutSection,
    TrackingSection,
    WarmupSection,
    take_teacher_recipe,
)

__all__ = ["ConfigError", "PipelineConfig", "Seed", "load_config", "validate_config"]

# Every stage seeds numpy (transformers' `set_seed`), which takes 0..2**32 - 1 only.
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]


@dataclass(frozen=True)
class RolePruning:
    """Each model's `prune` settings, read by role like the `base` section's `for_role`."""

    teacher: ModelSpec
    student: ModelSpec

    def for_role(self, role: str) -> PruneSpec | None:
        return getattr(self, role).prune


class PipelineConfig(Section):
    """The whole run: models, data and one section per stage."""

    name: Name = Field("sparse2dense", json_schema_extra=NON_SEMANTIC)
    """Name of the run: its MLflow experiment and the registered student's model name (NAME-student);
    letters, digits, '_', '.', '-', at most 64 characters."""
    seed: Seed = 42
    """Seed of data splits, sampling and training, 0 to 2**32 - 1; part of every stage key."""
    store_dir: str = Field("runs/store", json_schema_extra=NON_SEMANTIC)
    """Directory of the keyed stage outputs: models, rollouts, evaluations."""
    runs_dir: str = Field("runs", json_schema_extra=NON_SEMANTIC)
    """Directory of run summaries, sweep reports, the Prefect database and the MLflow store."""
    teacher: ModelSpec
    """The teacher: the larger model, trained with the labels."""
    student: ModelSpec
    """The student: the deployment model, trained densely from the teacher."""
    data: DataSection = DataSection()
    """Data preparation: labeled, unlabeled and eval sets."""
    base: BaseSection = BaseSection()
    """Toy pre-training of both models (toy world only)."""
    teacher_rl: GRPOSection = GRPOSection()
    """Stage 1: GRPO on the teacher with the stage-1 labels."""
    teacher_rollouts: RolloutSection = RolloutSection()
    """Teacher samples on unlabeled prompts: the warmup's data."""
    warmup: WarmupSection = WarmupSection()
    """Stage 2: forward-KL (or SFT) warmup of the student on teacher rollouts."""
    opd: OPDSection = OPDSection()
    """Stage 3: on-policy distillation, reverse KL on student samples."""
    student_rl: GRPOSection = GRPOSection(enabled=False, labels="heldout")
    """Stage 4 (optional, off by default): GRPO on the student with the held-out labels."""
    eval: EvalSection = EvalSection()
    """Evaluation of the raw and final student and of the teacher before and after RL."""
    tracking: TrackingSection = TrackingSection()
    """Where MLflow results go."""
    launcher: LauncherSection = Field(LauncherSection(), json_schema_extra=NON_SEMANTIC)
    """How training stages are started: one process or accelerate launch (not in the cache key)."""
    schedule: ScheduleSection = Field(ScheduleSection(), json_schema_extra=NON_SEMANTIC)
    """How many stages run at once, and on which GPUs (not in the cache key)."""

    @property
    def pruning(self) -> RolePruning:
        """The prune step's section: the `prune` settings of the model it acts on."""
        return RolePruning(teacher=self.teacher, student=self.student)

    @model_validator(mode="before")
    @classmethod
    def _student_takes_teacher_recipe(cls, data: Any) -> Any:
        return take_teacher_recipe(data)

    @model_validator(mode="after")
    def _only_student_rl_borrows(self) -> PipelineConfig:
        if self.teacher_rl.recipe != "own":
            raise ValueError("teacher_rl.recipe must be 'own' (only student_rl takes teacher_rl's recipe)")
        return self

    @model_validator(mode="after")
    def _toy_is_consistent(self) -> PipelineConfig:
        has_toy_model = self.teacher.toy is not None or self.student.toy is not None
        if has_toy_model and self.data.kind != "toy":
            raise ValueError("toy models (teacher.toy / student.toy) need data.kind = 'toy'")
        longest, task = self.base.student_max_terms, self.data.toy
        if longest is not None and not task.min_terms <= longest <= task.max_terms:
            raise ValueError(
                f"base.student_max_terms ({longest}) must lie within data.toy's "
                f"min_terms..max_terms ({task.min_terms}..{task.max_terms})"
            )
        return self

    @model_validator(mode="after")
    def _batches_split(self) -> PipelineConfig:
        """Every planned training stage's memory plan multiplies out to its global batch on the
        launcher's processes (a typo in a GPU preset is caught here, on any machine)."""
        problems = []
        for name, global_batch, memory, world in self.training_batches():
            try:
                split_batch(
                    global_batch,
                    world,
                    memory.per_device_train_batch_size,
                    memory.gradient_accumulation_steps,
                    f"{name}.memory",
                )
            except ValueError as err:
                problems.append(str(err))
        if problems:
            raise ValueError("; ".join(dict.fromkeys(problems)))
        return self

    def training_batches(self) -> list[tuple[str, int, MemoryPlan, int]]:
        """(section, examples per optimizer step over all processes, memory plan, processes) per
        section of a training stage the plan runs, read off the stage graph."""
        out: dict[str, tuple[str, int, MemoryPlan, int]] = {}
        for planned in plan_stages(self):
            if not is_training(planned.stage):
                continue
            d = current().stage(planned.stage)
            section = getattr(stage_inputs(self, planned.stage, planned.model), d.field)
            world = world_size_of(self.launcher, planned.stage)
            out.setdefault(d.section, (d.section, section.global_batch, section.memory, world))
        return list(out.values())


def validate_config(data: dict[str, Any], source: str = "<dict>") -> PipelineConfig:
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_errors(err, source)) from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> PipelineConfig:
    """Load a YAML preset, apply `--set` overrides, validate. Errors name the file and field."""
    data = read_yaml_mapping(path)
    return validate_config(apply_overrides(data, overrides or []), str(path))
