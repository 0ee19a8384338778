"""The one configuration schema: a pydantic model per stage section, frozen, unknown keys rejected.

A YAML preset is loaded with `yaml.safe_load`, overridden with `section.field=value` pairs and
validated once; an error names the dotted path of the offending field. Fields marked
`semantic=False` (logging cadence, checkpoint cadence, run names) do not change a stage's output
and are left out of its cache key (see `semantic_dump`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

NON_SEMANTIC = {"semantic": False}


class ConfigError(ValueError):
    """A config that cannot be loaded; the message names the file and the field's dotted path."""


class Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


Positive = Annotated[int, Field(gt=0)]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]
LearningRate = Annotated[float, Field(gt=0.0, lt=1.0)]


class ToyArchitecture(Section):
    """A Qwen3-architecture model built from scratch; used by the embedded toy world."""

    hidden_size: Positive = 64
    num_hidden_layers: Positive = 2
    num_attention_heads: Positive = 4
    num_key_value_heads: Positive = 2
    intermediate_size: Positive = 128
    max_position_embeddings: Positive = 256

    @model_validator(mode="after")
    def _heads_divide(self) -> ToyArchitecture:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError("hidden_size must be a multiple of num_attention_heads")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_attention_heads must be a multiple of num_key_value_heads")
        return self


class ModelSpec(Section):
    """Where a model comes from: a hub id or local path, or a toy architecture created from config."""

    name_or_path: str | None = None
    toy: ToyArchitecture | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    trust_remote_code: bool = False
    revision: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        if (self.name_or_path is None) == (self.toy is None):
            raise ValueError("set exactly one of name_or_path and toy")
        return self


class ToyTask(Section):
    """The synthetic arithmetic world: sums of `min_terms`..`max_terms` operands in [0, max_operand].

    The number of terms is the difficulty (each term is one more worked step, so errors compound).
    `base_noise` is the fraction of pre-training solutions that stop one step early (they box the
    partial sum before the last term): a systematic error both models pick up in `base`.
    """

    min_terms: Annotated[int, Field(ge=2, le=8)] = 2
    max_terms: Annotated[int, Field(ge=2, le=8)] = 4
    max_operand: Annotated[int, Field(ge=1, le=999)] = 30
    num_base: Positive = 4000
    num_labeled: Positive = 512
    num_unlabeled: Positive = 512
    num_test: Positive = 128
    base_noise: Probability = 0.0

    @model_validator(mode="after")
    def _terms_ordered(self) -> ToyTask:
        if self.min_terms > self.max_terms:
            raise ValueError("min_terms must not exceed max_terms")
        return self


class DataSection(Section):
    """Data preparation: the labeled pool, its split into stage-1 / held-out stage-4 sets, the unlabeled pool."""

    kind: Literal["toy", "math"] = "toy"
    toy: ToyTask = ToyTask()
    labeled_sources: list[str] = ["dapo_math_17k"]
    unlabeled_sources: list[str] = ["math_train"]
    eval_sets: list[str] = ["toy_test"]
    data_dir: str | None = None
    heldout_fraction: Probability = 0.2
    decontamination_ngram: Annotated[int, Field(ge=5, le=50)] = 13
    prompt_template: str = (
        "{problem}\n\nLet's think step by step and output the final answer within \\boxed{}."
    )
    chat_template_kwargs: dict[str, bool | int | str] = {}

    @model_validator(mode="after")
    def _template_has_problem(self) -> DataSection:
        if "{problem}" not in self.prompt_template:
            raise ValueError("prompt_template must contain '{problem}'")
        return self


class MemoryPlan(Section):
    """How a training stage fits in device memory; maps onto TRL's fields of the same names.

    Not semantic: the stage's section fixes the global batch per optimizer step, and this only
    decides how it is split (`global = per_device_train_batch_size x processes x
    gradient_accumulation_steps`; give either or both, the config is refused if they do not multiply
    out) and whether activations are recomputed. `None` leaves the choice to the hardware: bf16 and
    gradient checkpointing on a GPU that supports them, fp32 on CPU.
    """

    per_device_train_batch_size: Positive | None = None
    gradient_accumulation_steps: Positive | None = None
    gradient_checkpointing: bool | None = None
    bf16: bool | None = None


def _memory() -> Any:
    return Field(MemoryPlan(), json_schema_extra=NON_SEMANTIC)


VLLMMode = Literal["colocate", "server"]
GPUFraction = Annotated[float, Field(gt=0.0, le=1.0, json_schema_extra=NON_SEMANTIC)]


class BaseSection(Section):
    """Toy pre-training (SFT on worked solutions) that gives both models a non-zero start."""

    teacher_steps: Positive = 400
    student_steps: Positive = 150
    learning_rate: LearningRate = 3e-3
    batch_size: Positive = 32
    memory: MemoryPlan = _memory()
    logging_steps: Annotated[int, Field(gt=0, json_schema_extra=NON_SEMANTIC)] = 10


class GRPOSection(Section):
    """GRPO on a policy with labeled prompts (teacher RL in stage 1, student RL in stage 4).

    `prompts_per_step` prompts x `num_generations` completions make one optimizer step, over all
    processes together (`memory` says how that is split); one generation batch feeds
    `steps_per_generation` x `num_iterations` such steps.
    """

    enabled: bool = True
    steps: Positive = 40
    learning_rate: LearningRate = 1e-6
    weight_decay: Annotated[float, Field(ge=0.0)] = 0.1
    max_grad_norm: Annotated[float, Field(gt=0.0)] = 1.0
    prompts_per_step: Positive = 512
    num_generations: Annotated[int, Field(ge=2)] = 8
    epsilon_low: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.2
    epsilon_high: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.28
    loss_type: Literal["dapo", "grpo", "dr_grpo", "bnpo"] = "dapo"
    kl_beta: Annotated[float, Field(ge=0.0)] = 0.0
    steps_per_generation: Positive = Field(
        1,
        description="optimizer steps on each generation batch of prompts_per_step x steps_per_generation "
        "prompts (verl: train_batch_size / ppo_mini_batch_size); >1 makes later steps off-policy, so the clip acts",
    )
    num_iterations: Positive = Field(
        1, description="passes over each generation batch (GRPO's mu, verl's ppo_epochs); 1 or more"
    )
    temperature: Annotated[float, Field(gt=0.0, le=2.0)] = 1.0
    max_completion_length: Positive = 8192
    labels: Literal["stage1", "heldout", "replay"] = "stage1"
    use_vllm: bool = False
    vllm_importance_sampling_correction: bool = Field(
        False,
        description="TRL's truncated importance sampling for vLLM-vs-trainer logprob mismatch (only with "
        "use_vllm; off in the authors' verl code)",
    )
    vllm_mode: VLLMMode = Field("colocate", json_schema_extra=NON_SEMANTIC)
    vllm_gpu_memory_utilization: GPUFraction = 0.3
    vllm_tensor_parallel_size: Annotated[int, Field(gt=0, json_schema_extra=NON_SEMANTIC)] = 1
    vllm_server_base_url: str | None = Field(None, json_schema_extra=NON_SEMANTIC)
    memory: MemoryPlan = _memory()
    checkpoint_every: Annotated[int, Field(gt=0, json_schema_extra=NON_SEMANTIC)] = 50
    logging_steps: Annotated[int, Field(gt=0, json_schema_extra=NON_SEMANTIC)] = 1
    recipe: Literal["own", "teacher_rl"] = Field(
        "own",
        description="student_rl only: 'teacher_rl' takes teacher_rl's GRPO_RECIPE fields at validation",
        json_schema_extra=NON_SEMANTIC,
    )


# What "the same GRPO recipe" means: every field that shapes the updates and the labels they read.
# Not the switch, the generation backend or how the batch is split in memory.
GRPO_RECIPE = (
    "steps",
    "learning_rate",
    "weight_decay",
    "max_grad_norm",
    "prompts_per_step",
    "num_generations",
    "epsilon_low",
    "epsilon_high",
    "loss_type",
    "kl_beta",
    "temperature",
    "max_completion_length",
    "labels",
    "steps_per_generation",
    "num_iterations",
    "vllm_importance_sampling_correction",
)


def take_teacher_recipe(data: Any) -> Any:
    """Raw config data with `student_rl`'s GRPO_RECIPE fields replaced by `teacher_rl`'s when
    `student_rl.recipe` is `teacher_rl`: resolved on every validation, so direct GRPO on the student
    stays the teacher's recipe however teacher_rl is tuned later (the cache key sees the values)."""
    if not isinstance(data, dict):
        return data
    student = data.get("student_rl")
    student = student.model_dump() if isinstance(student, BaseModel) else student
    if not isinstance(student, dict) or student.get("recipe") != "teacher_rl":
        return data
    teacher = data.get("teacher_rl") or {}
    try:
        teacher = teacher if isinstance(teacher, GRPOSection) else GRPOSection.model_validate(teacher)
    except ValidationError:
        return data  # validation proper reports teacher_rl's own errors, with their paths
    return {**data, "student_rl": {**student, **teacher.model_dump(include=set(GRPO_RECIPE))}}

    @model_validator(mode="after")
    def _whole_generation_batches(self) -> GRPOSection:
        per_batch = self.steps_per_generation * self.num_iterations
        if self.steps % per_batch:
            raise ValueError(
                f"steps ({self.steps}) must be a multiple of steps_per_generation x num_iterations "
                f"({per_batch}), so every generation batch is used in full"
            )
        return self


class RolloutSection(Section):
    """Teacher rollouts on unlabeled prompts: the warmup's training data."""

    samples_per_prompt: Positive = 1
    temperature: Annotated[float, Field(gt=0.0, le=2.0)] = 1.0
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0
    top_k: Annotated[int, Field(ge=0)] = 0
    max_new_tokens: Positive = 8192
    heldout_fraction: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.1
    backend: Literal["auto", "transformers", "vllm"] = "auto"
    vllm_gpu_memory_utilization: GPUFraction = 0.9
    vllm_tensor_parallel_size: Annotated[int, Field(gt=0, json_schema_extra=NON_SEMANTIC)] = 1
    batch_size: Annotated[int, Field(gt=0, json_schema_extra=NON_SEMANTIC)] = 64


class WarmupSection(Section):
    """Bridge part a: token-level forward KL(teacher || student) on teacher rollouts, or SFT on them.

    `batch_size` sequences make one optimizer step, over all processes together.
    """

    enabled: bool = True
    objective: Literal["forward_kl", "sft"] = "forward_kl"
    epochs: Annotated[float, Field(gt=0.0)] = 1.0
    learning_rate: LearningRate = 1e-5
    batch_size: Positive = 64
    max_length: Positive = 16384
    memory: MemoryPlan = _memory()
    checkpoint_every: Annotated[int, Field(gt=0, json_schema_extra=NON_SEMANTIC)] = 100
    logging_steps: Annotated[int, Field(gt=0, json_schema_extra=NON_SEMANTIC)] = 5


class OPDSection(Section):
    """Bridge part b: on-policy distillation, reverse KL(student || teacher) on student samples.

    `prompts_per_step` is the rollout batch of one optimizer step, over all processes together.
    """

    enabled: bool = True
    steps: Positive = 100
    learning_rate: LearningRate = 1e-6
    weight_decay: Annotated[float, Field(ge=0.0)] = Field(
        0.0, description="AdamW weight decay, >= 0 (the authors' code: 0.1)"
    )
    prompts_per_step: Positive = 64
    temperature: Annotated[float, Field(gt=0.0, le=2.0)] = 1.0
    max_completion_length: Positive = 8192
    beta: Probability = 1.0
    diagnostic_prompts: Positive = 64
    use_vllm: bool = False
    vllm_mode: VLLMMode = Field("colocate", json_schema_extra=NON_SEMANTIC)
    vllm_gpu_memory_utilization: GPUFraction = 0.3
    vllm_tensor_parallel_size: Annotated[int, Field(gt=0, json_schema_extra=NON_SEMANTIC)] = 1
    vllm_server_base_url: str | None = Field(None, json_schema_extra=NON_SEMANTIC)
    memory: MemoryPlan = _memory()
    checkpoint_every: Annotated[int, Field(gt=0, json_schema_extra=NON_SEMANTIC)] = 50
    logging_steps: Annotated[int, Field(gt=0, json_schema_extra=NON_SEMANTIC)] = 1


class EvalSection(Section):
    """Evaluation: k samples per problem, avg@k / pass@k / maj@k with per-sample records."""

    samples_per_problem: Positive = 16
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] = 0.7
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] = 0.8
    top_k: Annotated[int, Field(ge=0)] = 20
    max_new_tokens: Positive = 16384
    max_problems: Positive | None = None
    backend: Literal["auto", "transformers", "vllm"] = "auto"
    vllm_gpu_memory_utilization: GPUFraction = 0.9
    vllm_tensor_parallel_size: Annotated[int, Field(gt=0, json_schema_extra=NON_SEMANTIC)] = 1
    batch_size: Annotated[int, Field(gt=0, json_schema_extra=NON_SEMANTIC)] = 64


class LauncherSection(Section):
    """How the training stages (base, teacher_rl, warmup, opd, student_rl) are started.

    `local`: one process, `python -m sparse2dense.stages.<stage> SPEC.json`. `accelerate`: the same
    program under `accelerate launch` on `num_processes` processes in all (over `num_machines`
    machines; run the flow once per machine with its `machine_rank`), with DDP, FSDP or DeepSpeed
    as the accelerate `config_file` says (ready ones in infra/accelerate/). Data preparation, rollouts
    and evaluation always run as one local process. Not semantic: where a stage runs does not
    change the cache key (the global batch is fixed by each stage's section).
    """

    kind: Literal["local", "accelerate"] = "local"
    num_processes: Positive = 1
    num_machines: Positive = 1
    machine_rank: Annotated[int, Field(ge=0)] = 0
    main_process_ip: str | None = None
    main_process_port: Annotated[int, Field(gt=0, lt=65536)] | None = None
    config_file: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> LauncherSection:
        if self.kind == "local" and (self.num_processes > 1 or self.num_machines > 1):
            raise ValueError("more than one process or machine needs kind: accelerate")
        if self.num_processes % self.num_machines:
            raise ValueError("num_processes (all machines together) must be a multiple of num_machines")
        if self.machine_rank >= self.num_machines:
            raise ValueError("machine_rank must be below num_machines")
        if self.num_machines > 1 and self.main_process_ip is None:
            raise ValueError("several machines need main_process_ip (the address of machine_rank 0)")
        return self


class TrackingSection(Section):
    """Where results go. `None` means the embedded default under the runs directory."""

    experiment: str | None = Field(None, json_schema_extra=NON_SEMANTIC)
    tracking_uri: str | None = Field(None, json_schema_extra=NON_SEMANTIC)


class PipelineConfig(Section):
    """The whole run: models, data and one section per stage."""

    name: str = Field("sparse2dense", json_schema_extra=NON_SEMANTIC)
    seed: int = 42
    store_dir: str = Field("runs/store", json_schema_extra=NON_SEMANTIC)
    runs_dir: str = Field("runs", json_schema_extra=NON_SEMANTIC)
    teacher: ModelSpec
    student: ModelSpec
    data: DataSection = DataSection()
    base: BaseSection = BaseSection()
    teacher_rl: GRPOSection = GRPOSection()
    teacher_rollouts: RolloutSection = RolloutSection()
    warmup: WarmupSection = WarmupSection()
    opd: OPDSection = OPDSection()
    student_rl: GRPOSection = GRPOSection(enabled=False, labels="heldout")
    eval: EvalSection = EvalSection()
    tracking: TrackingSection = TrackingSection()
    launcher: LauncherSection = Field(LauncherSection(), json_schema_extra=NON_SEMANTIC)

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
        return self

    @model_validator(mode="after")
    def _batches_split(self) -> PipelineConfig:
        """Every training stage's memory plan multiplies out to its global batch on the launcher's
        processes (a typo in a GPU preset is caught here, on any machine)."""
        from sparse2dense.launch import split_batch, world_size_of

        world = world_size_of(self.launcher, "opd")
        problems = []
        for name, global_batch, memory in self.global_batches():
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
            raise ValueError("; ".join(problems))
        return self

    def global_batches(self) -> list[tuple[str, int, MemoryPlan]]:
        """(section, examples per optimizer step over all processes, memory plan) per training stage."""
        out = []
        if self.teacher.toy is not None or self.student.toy is not None:
            out.append(("base", self.base.batch_size, self.base.memory))
        for name in ("teacher_rl", "student_rl"):
            grpo = getattr(self, name)
            if grpo.enabled:
                out.append((name, grpo.prompts_per_step * grpo.num_generations, grpo.memory))
        if self.warmup.enabled:
            out.append(("warmup", self.warmup.batch_size, self.warmup.memory))
        if self.opd.enabled:
            out.append(("opd", self.opd.prompts_per_step, self.opd.memory))
        return out


def semantic_dump(section: BaseModel) -> dict[str, Any]:
    """The fields of a section that change a stage's output, recursively, as plain JSON values."""
    out: dict[str, Any] = {}
    for name, field in type(section).model_fields.items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        if extra.get("semantic") is False:
            continue
        value = getattr(section, name)
        out[name] = semantic_dump(value) if isinstance(value, BaseModel) else _jsonable(value)
    return out


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def format_errors(err: ValidationError, source: str, kind: str = "config") -> str:
    """A validation error as one line per field, each naming the field's dotted path."""
    lines = [f"invalid {kind} {source}:"]
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "<root>"
        lines.append(f"  {path}: {e['msg']}")
    return "\n".join(lines)


def parse_override(item: str) -> tuple[list[str], Any]:
    """`section.field=value` -> (["section", "field"], value); the value is parsed as YAML."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form section.field=value")
    dotted, raw = item.split("=", 1)
    path = [p for p in dotted.strip().split(".") if p]
    if not path:
        raise ConfigError(f"override {item!r} names no field")
    return path, yaml.safe_load(raw)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """A copy of `data` with each `a.b.c=value` set; unknown keys are left for validation to reject."""
    result = json.loads(json.dumps(data))
    for item in overrides:
        path, value = parse_override(item)
        node = result
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
            node = child
        node[path[-1]] = value
    return result


def validate_config(data: dict[str, Any], source: str = "<dict>") -> PipelineConfig:
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_errors(err, source)) from None


def read_yaml_mapping(path: str | Path, kind: str = "config") -> dict[str, Any]:
    """A YAML file's top-level mapping (`yaml.safe_load`); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{kind} file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{kind} {path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{kind} {path} must be a mapping at the top level")
    return data


def load_config(path: str | Path, overrides: list[str] | None = None) -> PipelineConfig:
    """Load a YAML preset, apply `--set` overrides, validate. Errors name the file and field."""
    data = read_yaml_mapping(path)
    return validate_config(apply_overrides(data, overrides or []), str(path))
