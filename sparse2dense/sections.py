"""The config sections: one pydantic model per stage (and the models and data they read), frozen,
unknown keys rejected, every field described. `config.py` assembles them into the whole pipeline's
config; the stage graph (`graph.py`) names which section each stage reads.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from sparse2dense.schema import NON_SEMANTIC, LearningRate, Positive, Probability, Section

# What counts as a completion's answer (grading.grade_output).
AnswerFormat = Literal["boxed", "stated"]


class ToyArchitecture(Section):
    """A Qwen3-architecture model built from scratch; used by the embedded toy world."""

    hidden_size: Positive = 64
    """Width of the hidden states (units); a multiple of num_attention_heads."""
    num_hidden_layers: Positive = 2
    """Decoder layers (count)."""
    num_attention_heads: Positive = 4
    """Query attention heads (count); a multiple of num_key_value_heads."""
    num_key_value_heads: Positive = 2
    """Key/value heads of grouped-query attention (count)."""
    intermediate_size: Positive = 128
    """Width of each MLP's hidden layer (units)."""
    max_position_embeddings: Positive = 256
    """Longest sequence the model accepts (tokens)."""

    @model_validator(mode="after")
    def _heads_divide(self) -> ToyArchitecture:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError("hidden_size must be a multiple of num_attention_heads")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_attention_heads must be a multiple of num_key_value_heads")
        return self


class PruneSpec(Section):
    """A shallower copy of a model: `num_hidden_layers` of its decoder layers are kept.

    The contiguous block of layers whose removal changes the hidden states least is dropped: the
    block with the smallest angular distance between the hidden state entering it and the one
    leaving it, measured on prompts of the unlabeled set (Gromov et al. 2024, "The Unreasonable
    Ineffectiveness of the Deeper Layers"). Embeddings, final norm and head are kept whole.
    """

    num_hidden_layers: Positive
    """Decoder layers the pruned model keeps (fewer than the source has)."""
    calibration_prompts: Positive = 32
    """Unlabeled prompts on which the angular distances are measured (count)."""


class ModelSpec(Section):
    """Where a model comes from: a hub id or local path, or a toy architecture created from config."""

    name_or_path: str | None = None
    """Hub id (org/name) or local model directory; set this or `toy`."""
    toy: ToyArchitecture | None = None
    """Architecture of a tiny model created from scratch (toy world); set this or `name_or_path`."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Weight dtype when loading: auto keeps the checkpoint's on GPU and uses float32 on CPU."""
    trust_remote_code: bool = False
    """Run model code shipped with a hub checkpoint (off: built-in architectures only)."""
    revision: str | None = None
    """Hub branch, tag or commit of `name_or_path` (none: the default branch)."""
    sha256: Annotated[str, Field(pattern="^[0-9a-f]{64}$")] | None = None
    """Content digest of a `.gguf` name_or_path (none: read from the file when the run is planned);
    part of the key of every stage that reads the model, and a file that differs is refused."""
    prune: PruneSpec | None = None
    """Make this model a layer-pruned copy of name_or_path, built and cached as its own step."""

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        if (self.name_or_path is None) == (self.toy is None):
            raise ValueError("set exactly one of name_or_path and toy")
        if self.sha256 is not None and not (self.name_or_path or "").lower().endswith(".gguf"):
            raise ValueError("sha256 pins a .gguf name_or_path only")
        if self.prune is not None and self.name_or_path is None:
            raise ValueError("prune needs name_or_path (the model whose layers are kept)")
        return self


class GeneratedPools(Section):
    """The pools a generated world draws besides its test set (toy sums, word problems)."""

    num_labeled: Positive = 512
    """Labeled problems: the pool split into the stage-1 and held-out stage-4 sets (count)."""
    num_unlabeled: Positive = 512
    """Unlabeled prompts for teacher rollouts and OPD (count)."""


class ToyTask(GeneratedPools):
    """The synthetic arithmetic world: sums of `min_terms`..`max_terms` operands in [0, max_operand].

    The number of terms is the difficulty (each term is one more worked step, so errors compound).
    `base_noise` is the fraction of pre-training solutions that stop one step early (they box the
    partial sum before the last term): a systematic error both models pick up in `base`.
    """

    min_terms: Annotated[int, Field(ge=2, le=8)] = 2
    """Fewest operands per sum (2-8): the easiest problems."""
    max_terms: Annotated[int, Field(ge=2, le=8)] = 4
    """Most operands per sum (2-8): the hardest problems; each term is one more worked step."""
    max_operand: Annotated[int, Field(ge=1, le=999)] = 30
    """Largest operand (1-999); operands are drawn from [0, max_operand]."""
    num_base: Positive = 4000
    """Worked solutions in the base pre-training set (count)."""
    num_test: Positive = 128
    """Problems in the toy_test eval set (count)."""
    base_noise: Probability = 0.0
    """Fraction of pre-training solutions that stop one step early, boxing the partial sum before the last term (0-1)."""

    @model_validator(mode="after")
    def _terms_ordered(self) -> ToyTask:
        if self.min_terms > self.max_terms:
            raise ValueError("min_terms must not exceed max_terms")
        return self


class WordTask(GeneratedPools):
    """Arithmetic word problems: a named person holds some items, then `min_steps`..`max_steps` events
    change the count (gets, buys or finds more; gives away, loses or sells some; at the hardest levels
    gets as many again), then the question asks how many are left.

    The number of events is the difficulty. Operands grow with it (`max_operand`, one entry per level),
    removals start at `removal_from_level` and doubling at `doubling_from_level`, so the easiest level
    is one addition of single digits and each level above adds a step, larger numbers or a new operation.
    """

    min_steps: Annotated[int, Field(ge=1, le=6)] = 1
    """Fewest events per problem (1-6): the easiest level."""
    max_steps: Annotated[int, Field(ge=1, le=6)] = 4
    """Most events per problem (1-6): the hardest level."""
    max_operand: list[Annotated[int, Field(ge=1, le=999)]] = [9, 9, 15, 20, 30, 50]
    """Largest starting count and event amount per level, from 1 step up (1-999 each; one entry per level up to max_steps)."""
    removal_from_level: Annotated[int, Field(ge=1, le=7)] = 2
    """Lowest level (steps) whose events may take items away, never below zero (1-7; 7: never)."""
    doubling_from_level: Annotated[int, Field(ge=1, le=7)] = 5
    """Lowest level (steps) whose events may double the count, "as many as they already have" (1-7; 7: never)."""
    num_test: Positive = 120
    """Problems in the words_test eval set (count); levels take turns, so any prefix is balanced."""

    @model_validator(mode="after")
    def _levels_ordered(self) -> WordTask:
        if self.min_steps > self.max_steps:
            raise ValueError(f"min_steps ({self.min_steps}) must not exceed max_steps ({self.max_steps})")
        if len(self.max_operand) < self.max_steps:
            raise ValueError(
                f"max_operand has {len(self.max_operand)} entries; give one per level up to max_steps "
                f"({self.max_steps})"
            )
        return self


class DataSection(Section):
    """Data preparation: the labeled pool, its split into stage-1 / held-out stage-4 sets, the unlabeled pool."""

    kind: Literal["toy", "math", "words"] = "toy"
    """toy: the generated arithmetic world; math: benchmark files and datasets; words: generated word problems."""
    toy: ToyTask = ToyTask()
    """Sizes of the toy world (kind toy only)."""
    words: WordTask = WordTask()
    """The generated word problems (kind words only)."""
    labeled_sources: list[str] = ["dapo_math_17k"]
    """Labeled datasets (kind math): known names, .jsonl/.json/.parquet paths or hub ids."""
    unlabeled_sources: list[str] = ["math_train"]
    """Datasets whose problems, answers stripped, feed rollouts and OPD (kind math)."""
    eval_sets: list[str] = ["toy_test"]
    """Benchmarks every eval stage scores: toy_test (kind toy); known names, paths or hub ids (math); words_test and those (words)."""
    eval_max_problems: dict[str, Positive] = {}
    """At most the first N problems of the named eval sets, kept at data prep (e.g. {gsm8k: 64}); others whole."""
    data_dir: str | None = None
    """Directory holding the known benchmarks' files (needed for known names with kind math)."""
    heldout_fraction: Probability = 0.2
    """Fraction of the labeled pool held out for stage-4 student RL (0-1)."""
    bridge_reads_stage1: bool = False
    """The bridge's prompts (teacher rollouts, OPD) include the stage-1 problems, labels stripped, as in
    the paper: replayed stage-1 labels are then ones the student was already distilled on."""
    decontamination_ngram: Annotated[int, Field(ge=5, le=50)] = 13
    """Word n-gram length of the overlap check against eval problems (5-50)."""
    prompt_template: str = (
        "{problem}\n\nLet's think step by step and output the final answer within \\boxed{}."
    )
    """Prompt text around each problem; must contain {problem}."""
    chat_template_kwargs: dict[str, bool | int | str] = {}
    """Extra arguments to the tokenizer's chat template (e.g. enable_thinking: false)."""
    answer_format: AnswerFormat = "boxed"
    """What counts as the answer, for the reward and eval alike: boxed, only a final \\boxed{} (the
    paper's); stated, a final box or else the value the final sentence states ("The answer is 6.")."""

    @field_validator("labeled_sources", "unlabeled_sources", "eval_sets")
    @classmethod
    def _datasets_exist(cls, names: list[str], info: ValidationInfo) -> list[str]:
        """Each name must be one a loader reads (the toy world reads no sources, only its own eval set)."""
        from sparse2dense.data import dataset_problem, known_datasets

        kind = info.data.get("kind", "toy")
        if kind in ("toy", "words") and info.field_name != "eval_sets":
            return names
        if problems := [p for name in names if (p := dataset_problem(name, kind))]:
            raise ValueError(f"{'; '.join(problems)} ({known_datasets(kind)})")
        return names

    @field_validator("eval_max_problems")
    @classmethod
    def _limits_name_eval_sets(cls, limits: dict[str, int], info: ValidationInfo) -> dict[str, int]:
        eval_sets = info.data.get("eval_sets")
        if eval_sets is not None and (unknown := sorted(set(limits) - set(eval_sets))):
            raise ValueError(f"{', '.join(map(repr, unknown))} not in eval_sets {eval_sets}")
        return limits

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
    """Examples per device per micro-step (none: derived from the global batch)."""
    gradient_accumulation_steps: Positive | None = None
    """Micro-steps per optimizer step (none: derived from the global batch)."""
    gradient_checkpointing: bool | None = None
    """Recompute activations in the backward pass to save memory (none: on a capable GPU)."""
    bf16: bool | None = None
    """bfloat16 mixed precision (none: on a GPU that supports it, float32 on CPU)."""


def _memory() -> Any:
    return Field(MemoryPlan(), json_schema_extra=NON_SEMANTIC)


VLLMMode = Literal["colocate", "server"]
GPUFraction = Annotated[float, Field(gt=0.0, le=1.0, json_schema_extra=NON_SEMANTIC)]


class BaseSection(Section):
    """Toy pre-training (SFT on worked solutions) that gives both models a non-zero start."""

    teacher_steps: Positive = 400
    """Optimizer steps of the toy teacher's pre-training."""
    student_steps: Positive = 150
    """Optimizer steps of the toy student's pre-training."""
    student_max_terms: Annotated[int, Field(ge=2, le=8)] | None = None
    """Longest sum (terms) in the student's pre-training text; unset: all of data.toy (the teacher's always covers all)."""
    learning_rate: LearningRate = 3e-3
    """Peak learning rate (0-1)."""
    batch_size: Positive = 32
    """Worked solutions per optimizer step, over all processes."""
    memory: MemoryPlan = _memory()
    """How a step is split over devices and micro-steps (not in the cache key)."""
    logging_steps: Annotated[int, Field(gt=0, json_schema_extra=NON_SEMANTIC)] = 10
    """Optimizer steps between logged losses (not in the cache key)."""

    def for_role(self, role: str) -> BaseTraining:
        """The pre-training of one model: the teacher's covers every length, the student's may stop short."""
        teacher = role == "teacher"
        return BaseTraining(
            steps=self.teacher_steps if teacher else self.student_steps,
            max_terms=None if teacher else self.student_max_terms,
            **self.model_dump(include={"learning_rate", "batch_size", "memory", "logging_steps"}),
        )


class BaseTraining(Section):
    """One model's toy pre-training, as the base stage receives it."""

    steps: Positive
    """Optimizer steps."""
    max_terms: Annotated[int, Field(ge=2, le=8)] | None = None
    """Longest sum (terms) in the pre-training text (none: every length)."""
    learning_rate: LearningRate
    """Peak learning rate (0-1)."""
    batch_size: Positive
    """Worked solutions per optimizer step, over all processes."""
    memory: MemoryPlan = _memory()
    """How a step is split over devices and micro-steps (not in the cache key)."""
    logging_steps: Annotated[int, Field(gt=0, json_schema_extra=NON_SEMANTIC)] = 10
    """Optimizer steps between logged losses (not in the cache key)."""

    @property
    def global_batch(self) -> int:
        return self.batch_size


class GRPOSection(Section):
    """GRPO on a policy with labeled prompts (teacher RL in stage 1, student RL in stage 4).

    `prompts_per_step` prompts x `num_generations` completions make one optimizer step, over all
    processes together (`memory` says how that is split); one generation batch feeds
    `steps_per_generation` x `num_iterations` such steps.
    """

    enabled: bool = True
    """Run this stage (teacher_rl: on by default; student_rl: off)."""
    steps: Positive = 40
    """Optimizer steps."""
    learning_rate: LearningRate = 1e-6
    """Peak learning rate (0-1; the paper uses 1e-6)."""
    weight_decay: Annotated[float, Field(ge=0.0)] = 0.1
    """AdamW weight decay (>= 0)."""
    max_grad_norm: Annotated[float, Field(gt=0.0)] = 1.0
    """Gradient clipping norm (> 0)."""
    prompts_per_step: Positive = 512
    """Prompts per optimizer step over all processes, each sampled num_generations times."""
    num_generations: Annotated[int, Field(ge=2)] = 8
    """Completions per prompt: the group whose rewards are normalized (>= 2)."""
    epsilon_low: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.2
    """Lower clip of the importance ratio, 1 - epsilon_low (0-1)."""
    epsilon_high: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.28
    """Upper clip of the importance ratio, 1 + epsilon_high (0-1; DAPO's clip-higher 0.28)."""
    loss_type: Literal["dapo", "grpo", "dr_grpo", "bnpo"] = "dapo"
    """Loss normalization, as TRL's GRPOConfig.loss_type."""
    kl_beta: Annotated[float, Field(ge=0.0)] = 0.0
    """Weight of the KL penalty to the initial policy (>= 0; 0: none, no reference model)."""
    steps_per_generation: Positive = Field(
        1,
        description="optimizer steps on each generation batch of prompts_per_step x steps_per_generation "
        "prompts (verl: train_batch_size / ppo_mini_batch_size); >1 makes later steps off-policy, so the clip acts",
    )
    num_iterations: Positive = Field(
        1, description="passes over each generation batch (GRPO's mu, verl's ppo_epochs); 1 or more"
    )
    temperature: Annotated[float, Field(gt=0.0, le=2.0)] = 1.0
    """Sampling temperature of the rollouts (0-2]."""
    max_completion_length: Positive = 8192
    """Longest sampled completion (tokens)."""
    labels: Literal["stage1", "heldout", "replay"] = "stage1"
    """Labels the reward reads: stage1 set, heldout stage-4 set, or replay of the stage-1 labels."""
    max_labels: Positive | None = None
    """Label budget: at most the first N problems of that set (nested: 32 of them are in any 128); none: all."""
    use_vllm: bool = False
    """Sample rollouts with vLLM (GPU) instead of transformers generate."""
    vllm_importance_sampling_correction: bool = Field(
        False,
        description="TRL's truncated importance sampling for vLLM-vs-trainer logprob mismatch (only with "
        "use_vllm; off in the authors' verl code)",
    )
    vllm_mode: VLLMMode = Field("colocate", json_schema_extra=NON_SEMANTIC)
    """colocate: vLLM inside the training processes; server: a `trl vllm-serve` (not in the key)."""
    vllm_gpu_memory_utilization: GPUFraction = 0.3
    """Fraction of GPU memory vLLM may take in colocate mode (0-1; not in the key)."""
    vllm_tensor_parallel_size: Annotated[int, Field(gt=0, json_schema_extra=NON_SEMANTIC)] = 1
    """GPUs one vLLM engine spans (not in the cache key)."""
    vllm_server_base_url: str | None = Field(None, json_schema_extra=NON_SEMANTIC)
    """URL of the vLLM server in server mode (none: TRL's default; not in the key)."""
    memory: MemoryPlan = _memory()
    """How a step is split over devices and micro-steps (not in the cache key)."""
    checkpoint_every: Annotated[int, Field(gt=0, json_schema_extra=NON_SEMANTIC)] = 50
    """Optimizer steps between resumable checkpoints (not in the cache key)."""
    logging_steps: Annotated[int, Field(gt=0, json_schema_extra=NON_SEMANTIC)] = 1
    """Optimizer steps between logged metrics (not in the cache key)."""
    recipe: Literal["own", "teacher_rl"] = Field(
        "own",
        description="student_rl only: 'teacher_rl' takes teacher_rl's GRPO_RECIPE fields at validation",
        json_schema_extra=NON_SEMANTIC,
    )

    @model_validator(mode="after")
    def _whole_generation_batches(self) -> GRPOSection:
        per_batch = self.steps_per_generation * self.num_iterations
        if self.steps % per_batch:
            raise ValueError(
                f"steps ({self.steps}) must be a multiple of steps_per_generation x num_iterations "
                f"({per_batch}), so every generation batch is used in full"
            )
        return self

    @property
    def global_batch(self) -> int:
        return self.prompts_per_step * self.num_generations


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
    "max_labels",
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


class RolloutSection(Section):
    """Teacher rollouts on unlabeled prompts: the warmup's training data."""

    samples_per_prompt: Positive = 1
    """Teacher completions per unlabeled prompt."""
    temperature: Annotated[float, Field(gt=0.0, le=2.0)] = 1.0
    """Sampling temperature (0-2]."""
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0
    """Nucleus sampling: smallest token set with this probability mass (0-1]; 1 = off."""
    top_k: Annotated[int, Field(ge=0)] = 0
    """Sample among the k most likely tokens (0 = off)."""
    max_new_tokens: Positive = 8192
    """Longest completion (tokens)."""
    heldout_fraction: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.1
    """Fraction of prompts whose rollouts are held out to measure forward KL (0-1)."""
    backend: Literal["auto", "transformers", "vllm"] = "auto"
    """Generation engine: auto (vLLM when installed and on GPU, else transformers), transformers, vllm."""
    vllm_gpu_memory_utilization: GPUFraction = 0.9
    """Fraction of GPU memory vLLM may take (0-1; not in the cache key)."""
    vllm_tensor_parallel_size: Annotated[int, Field(gt=0, json_schema_extra=NON_SEMANTIC)] = 1
    """GPUs one vLLM engine spans (not in the cache key)."""
    batch_size: Annotated[int, Field(gt=0, json_schema_extra=NON_SEMANTIC)] = 64
    """Prompts per generation shard, the unit of resumption (not in the cache key)."""


class WarmupSection(Section):
    """Bridge part a: token-level forward KL(teacher || student) on teacher rollouts, or SFT on them.

    `batch_size` sequences make one optimizer step, over all processes together.
    """

    enabled: bool = True
    """Run the warmup (off: OPD starts from the base student)."""
    objective: Literal["forward_kl", "sft"] = "forward_kl"
    """forward_kl: match the teacher's token distributions (GKD); sft: fit the teacher's sampled tokens."""
    epochs: Annotated[float, Field(gt=0.0)] = 1.0
    """Passes over the teacher rollouts (> 0, fractions allowed)."""
    learning_rate: LearningRate = 1e-5
    """Peak learning rate (0-1)."""
    batch_size: Positive = 64
    """Sequences per optimizer step, over all processes."""
    max_length: Positive = 16384
    """Longest prompt + completion sequence (tokens); longer ones are truncated."""
    memory: MemoryPlan = _memory()
    """How a step is split over devices and micro-steps (not in the cache key)."""
    checkpoint_every: Annotated[int, Field(gt=0, json_schema_extra=NON_SEMANTIC)] = 100
    """Optimizer steps between resumable checkpoints (not in the cache key)."""
    logging_steps: Annotated[int, Field(gt=0, json_schema_extra=NON_SEMANTIC)] = 5
    """Optimizer steps between logged losses (not in the cache key)."""

    @property
    def global_batch(self) -> int:
        return self.batch_size


class OPDSection(Section):
    """Bridge part b: on-policy distillation, reverse KL(student || teacher) on student samples.

    `prompts_per_step` is the rollout batch of one optimizer step, over all processes together.
    """

    enabled: bool = True
    """Run on-policy distillation (off: the warmup's student is final)."""
    steps: Positive = 100
    """Optimizer steps."""
    learning_rate: LearningRate = 1e-6
    """Peak learning rate (0-1)."""
    weight_decay: Annotated[float, Field(ge=0.0)] = Field(
        0.0, description="AdamW weight decay, >= 0 (the authors' code: 0.1)"
    )
    prompts_per_step: Positive = 64
    """Prompts per optimizer step over all processes, one student sample each."""
    temperature: Annotated[float, Field(gt=0.0, le=2.0)] = 1.0
    """Sampling temperature of the student's samples (0-2]."""
    max_completion_length: Positive = 8192
    """Longest student sample (tokens)."""
    beta: Probability = 1.0
    """Generalized JSD mix: 1 = reverse KL(student || teacher), 0 = forward KL (0-1)."""
    diagnostic_prompts: Positive = 64
    """Prompts on which reverse KL and implicit reward are measured before and after (count)."""
    use_vllm: bool = False
    """Sample with vLLM (GPU) instead of transformers generate."""
    vllm_mode: VLLMMode = Field("colocate", json_schema_extra=NON_SEMANTIC)
    """colocate: vLLM inside the training processes; server: a `trl vllm-serve` (not in the key)."""
    vllm_gpu_memory_utilization: GPUFraction = 0.3
    """Fraction of GPU memory vLLM may take in colocate mode (0-1; not in the key)."""
    vllm_tensor_parallel_size: Annotated[int, Field(gt=0, json_schema_extra=NON_SEMANTIC)] = 1
    """GPUs one vLLM engine spans (not in the cache key)."""
    vllm_server_base_url: str | None = Field(None, json_schema_extra=NON_SEMANTIC)
    """URL of the vLLM server in server mode (none: TRL's default; not in the key)."""
    memory: MemoryPlan = _memory()
    """How a step is split over devices and micro-steps (not in the cache key)."""
    checkpoint_every: Annotated[int, Field(gt=0, json_schema_extra=NON_SEMANTIC)] = 50
    """Optimizer steps between resumable checkpoints (not in the cache key)."""
    logging_steps: Annotated[int, Field(gt=0, json_schema_extra=NON_SEMANTIC)] = 1
    """Optimizer steps between logged metrics (not in the cache key)."""

    @property
    def global_batch(self) -> int:
        return self.prompts_per_step


class EvalSection(Section):
    """Evaluation: k samples per problem, avg@k / pass@k / maj@k with per-sample records."""

    samples_per_problem: Positive = 16
    """k: samples per problem behind avg@k, pass@k and maj@k."""
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] = 0.7
    """Sampling temperature [0-2]; 0 = greedy."""
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] = 0.8
    """Nucleus sampling: smallest token set with this probability mass (0-1]; 1 = off."""
    top_k: Annotated[int, Field(ge=0)] = 20
    """Sample among the k most likely tokens (0 = off)."""
    max_new_tokens: Positive = 16384
    """Longest completion (tokens)."""
    max_problems: Positive | None = None
    """Score only the first N problems of each eval set (none: all)."""
    backend: Literal["auto", "transformers", "vllm"] = "auto"
    """Generation engine: auto (vLLM when installed and on GPU, else transformers), transformers, vllm."""
    vllm_gpu_memory_utilization: GPUFraction = 0.9
    """Fraction of GPU memory vLLM may take (0-1; not in the cache key)."""
    vllm_tensor_parallel_size: Annotated[int, Field(gt=0, json_schema_extra=NON_SEMANTIC)] = 1
    """GPUs one vLLM engine spans (not in the cache key)."""
    batch_size: Annotated[int, Field(gt=0, json_schema_extra=NON_SEMANTIC)] = 64
    """Problems per generation shard, the unit of resumption (not in the cache key)."""


class TrackingSection(Section):
    """Where results go. `None` means the embedded default under the runs directory."""

    experiment: str | None = Field(None, json_schema_extra=NON_SEMANTIC)
    """MLflow experiment (none: the config's name)."""
    tracking_uri: str | None = Field(None, json_schema_extra=NON_SEMANTIC)
    """MLflow tracking URI (none: sqlite:///<runs_dir>/mlflow.db)."""
