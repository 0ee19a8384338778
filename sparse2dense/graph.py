"""The stage graph, declared once: every stage's name, version, kind, program, typed inputs and the
resources it needs, and the pipeline's layout as data.

Everything else reads it: the plan and its keys (`pipeline.py`), the sweep plan and the arms' switches
(`sweep.py`), the launcher (`launch.py`), config validation (`config.py`), the scheduler
(`schedule.py`) and the flows. Adding a stage is one `StageDef` (and its program) plus one `Step`
where it sits in the pipeline; a new stage may reuse an existing program and section.

- `StageDef`: what a stage *is*. `section` names the config section it reads (`for_role` sections,
  like `base`, give one model's share of it); `inputs` is the pydantic model its program receives,
  validated when the spec is made and again in the program; `models` maps the program's model roles
  to the configured teacher / student (`"self"`: the model the step acts on). Its GPU needs come
  from the validated inputs (`StageInputs.gpus`).
- `Step`: where a stage sits. Its inputs name earlier steps, or `@teacher` / `@student`: the newest
  step that `becomes` that model (nothing before one does: the configured model itself). `when`
  is the config path that switches the step on (`teacher_rl.enabled`, `teacher.toy`); an optional
  stage's switch is `<section>.enabled`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from sparse2dense.placement import LauncherSection
from sparse2dense.schema import NON_SEMANTIC, Section
from sparse2dense.sections import (
    AnswerFormat,
    BaseTraining,
    DataSection,
    EvalSection,
    GRPOSection,
    ModelSpec,
    OPDSection,
    PruneSpec,
    RolloutSection,
    WarmupSection,
)


class Stage(StrEnum):
    """The built-in stages (a graph may hold more: stage names are plain strings)."""

    DATA_PREP = "data_prep"
    BASE = "base"
    PRUNE = "prune"
    TEACHER_RL = "teacher_rl"
    TEACHER_ROLLOUTS = "teacher_rollouts"
    WARMUP = "warmup"
    OPD = "opd"
    STUDENT_RL = "student_rl"
    EVAL = "eval"


class StageKind(StrEnum):
    DATA = "data"
    TRAINING = "training"  # a TRL trainer; the only kind the accelerate launcher spreads over processes
    GENERATION = "generation"


Role = Literal["teacher", "student"]


# ---- typed inputs: what each stage program receives (SPEC.json's `config`) ----


class PromptFormat(Section):
    """How a problem becomes a prompt: the data section's template and chat-template arguments."""

    template: str
    """Prompt text around each problem; contains {problem}."""
    chat_template_kwargs: dict[str, bool | int | str] = {}
    """Extra arguments to the tokenizer's chat template."""
    answer_format: AnswerFormat = "boxed"
    """What counts as the answer: a final box only, or a box or the value the final sentence states."""


class StageInputs(Section):
    """What every stage receives besides its own section: the models it loads (by the program's
    role names) and, for training stages, the launcher (not in the cache key)."""

    models: dict[str, ModelSpec] = {}
    """Program role (policy, teacher, student, model) -> the configured model it starts from."""
    launcher: LauncherSection | None = Field(None, json_schema_extra=NON_SEMANTIC)
    """How a training stage is started (training stages only)."""

    def gpus(self) -> int:
        """GPUs the stage holds while it runs (on a machine that has them)."""
        if self.launcher is not None and self.launcher.kind == "accelerate":
            return self.launcher.num_processes // self.launcher.num_machines
        return 1


class DataPrepInputs(StageInputs):
    data: DataSection

    def gpus(self) -> int:
        return 0


class BaseInputs(StageInputs):
    train: BaseTraining
    prompt: PromptFormat


class PruneInputs(StageInputs):
    prune: PruneSpec
    prompt: PromptFormat


class GRPOInputs(StageInputs):
    grpo: GRPOSection
    prompt: PromptFormat


class RolloutInputs(StageInputs):
    rollouts: RolloutSection
    prompt: PromptFormat

    def gpus(self) -> int:
        return self.rollouts.vllm_tensor_parallel_size


class WarmupInputs(StageInputs):
    warmup: WarmupSection


class OPDInputs(StageInputs):
    opd: OPDSection
    prompt: PromptFormat


class EvalInputs(StageInputs):
    eval: EvalSection
    prompt: PromptFormat

    def gpus(self) -> int:
        return self.eval.vllm_tensor_parallel_size


# ---- the graph ----


class StageDef(BaseModel):
    """What a stage is (see module docstring)."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    name: str
    version: int  # bumped by hand when the stage's behaviour changes, so old outputs stop matching
    kind: StageKind
    program: str  # module under sparse2dense.stages
    inputs: type[StageInputs]
    section: str  # the config section it reads
    field: str  # the name of that section in `inputs`
    models: dict[str, Literal["teacher", "student", "self"]] = {}
    optional: bool = False  # switched by `<section>.enabled`; an arm may disable it


class Step(BaseModel):
    """Where a stage sits in the pipeline (see module docstring)."""

    model_config = ConfigDict(frozen=True)

    name: str
    stage: str
    acts_on: Role | None = None
    inputs: dict[str, str] = {}
    becomes: Role | None = None
    when: str | None = None


class StageGraph(BaseModel):
    model_config = ConfigDict(frozen=True)

    stages: dict[str, StageDef]
    pipeline: tuple[Step, ...]
    final_eval: str  # the step whose scores are the pipeline's result (the final student's)

    def stage(self, name: str) -> StageDef:
        if name not in self.stages:
            raise KeyError(f"unknown stage {name!r}; the graph has {sorted(self.stages)}")
        return self.stages[name]

    def of_kind(self, kind: StageKind) -> list[str]:
        return [name for name, d in self.stages.items() if d.kind is kind]

    def optional(self) -> list[str]:
        """The stages an arm may switch off (each by its section's `enabled`)."""
        return [name for name, d in self.stages.items() if d.optional]

    def step(self, name: str) -> Step:
        return next(s for s in self.pipeline if s.name == name)


def _def(name: Stage, version: int, kind: StageKind, inputs: type[StageInputs], **rest: Any) -> StageDef:
    rest.setdefault("section", str(name))
    rest.setdefault("field", rest["section"])
    return StageDef(name=str(name), version=version, kind=kind, program=str(name), inputs=inputs, **rest)


T, S = "@teacher", "@student"
DATA = {"data": "data_prep"}

GRAPH = StageGraph(
    stages={
        d.name: d
        for d in [
            _def(Stage.DATA_PREP, 3, StageKind.DATA, DataPrepInputs, section="data"),
            _def(Stage.BASE, 1, StageKind.TRAINING, BaseInputs, field="train", models={"policy": "self"}),
            _def(
                Stage.PRUNE,
                1,
                StageKind.GENERATION,
                PruneInputs,
                section="pruning",
                field="prune",
                models={"model": "self"},
            ),
            _def(
                Stage.TEACHER_RL,
                2,
                StageKind.TRAINING,
                GRPOInputs,
                field="grpo",
                models={"policy": "self"},
                optional=True,
            ),
            _def(
                Stage.TEACHER_ROLLOUTS,
                3,
                StageKind.GENERATION,
                RolloutInputs,
                field="rollouts",
                models={"teacher": "teacher"},
            ),
            _def(
                Stage.WARMUP,
                3,
                StageKind.TRAINING,
                WarmupInputs,
                models={"student": "student", "teacher": "teacher"},
                optional=True,
            ),
            _def(
                Stage.OPD,
                3,
                StageKind.TRAINING,
                OPDInputs,
                models={"student": "student", "teacher": "teacher"},
                optional=True,
            ),
            _def(
                Stage.STUDENT_RL,
                2,
                StageKind.TRAINING,
                GRPOInputs,
                field="grpo",
                models={"policy": "self"},
                optional=True,
            ),
            _def(Stage.EVAL, 4, StageKind.GENERATION, EvalInputs, models={"model": "self"}),
        ]
    },
    pipeline=(
        Step(name="data_prep", stage=Stage.DATA_PREP),
        Step(
            name="base/teacher",
            stage=Stage.BASE,
            acts_on="teacher",
            inputs=DATA,
            becomes="teacher",
            when="teacher.toy",
        ),
        Step(
            name="base/student",
            stage=Stage.BASE,
            acts_on="student",
            inputs=DATA,
            becomes="student",
            when="student.toy",
        ),
        Step(
            name="prune/student",
            stage=Stage.PRUNE,
            acts_on="student",
            inputs=DATA,
            becomes="student",
            when="student.prune",
        ),
        Step(name="eval/teacher_base", stage=Stage.EVAL, acts_on="teacher", inputs=DATA | {"model": T}),
        Step(name="eval/student_base", stage=Stage.EVAL, acts_on="student", inputs=DATA | {"model": S}),
        Step(
            name="teacher_rl",
            stage=Stage.TEACHER_RL,
            acts_on="teacher",
            inputs=DATA | {"policy": T},
            becomes="teacher",
            when="teacher_rl.enabled",
        ),
        Step(
            name="eval/teacher_rl",
            stage=Stage.EVAL,
            acts_on="teacher",
            inputs=DATA | {"model": T},
            when="teacher_rl.enabled",
        ),
        Step(
            name="teacher_rollouts",
            stage=Stage.TEACHER_ROLLOUTS,
            inputs=DATA | {"teacher": T},
            when="warmup.enabled",
        ),
        Step(
            name="warmup",
            stage=Stage.WARMUP,
            inputs={"student": S, "teacher": T, "rollouts": "teacher_rollouts"},
            becomes="student",
            when="warmup.enabled",
        ),
        Step(
            name="opd",
            stage=Stage.OPD,
            inputs=DATA | {"student": S, "teacher": T},
            becomes="student",
            when="opd.enabled",
        ),
        Step(
            name="student_rl",
            stage=Stage.STUDENT_RL,
            acts_on="student",
            inputs=DATA | {"policy": S},
            becomes="student",
            when="student_rl.enabled",
        ),
        Step(name="eval/student_final", stage=Stage.EVAL, acts_on="student", inputs=DATA | {"model": S}),
    ),
    final_eval="eval/student_final",
)


def current() -> StageGraph:
    """The graph in force (read at call time, so a test can add a stage to it)."""
    return GRAPH


def stage_version(name: str) -> int:
    return current().stage(name).version


def is_training(name: str) -> bool:
    return current().stage(name).kind is StageKind.TRAINING
