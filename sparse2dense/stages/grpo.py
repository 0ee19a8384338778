"""GRPO with the correctness reward: teacher RL (stage 1) and student RL (stage 4) are this one stage
with two configs.

TRL `GRPOTrainer` on labeled prompts (`stage1` or `heldout` split; `replay` re-reads stage-1 labels
the teacher already consumed: the control of held-out stage 4, as many prompts as the held-out set,
so the same updates and passes without new labels). Reward = `grading.REWARDS[answer_format]`, the
grading eval uses. DAPO defaults: clip 0.2/0.28, token-mean loss, no KL term; the authors' verl
setting of several optimizer steps per generation batch is `steps_per_generation`. The policy
trains in fp32 master weights (see models.py). Writes `model/` and the reward curve's summary.

    python -m sparse2dense.stages.teacher_rl SPEC.json   (or .student_rl)
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer

from sparse2dense.data import load_records
from sparse2dense.grading import REWARDS
from sparse2dense.graph import GRPOInputs
from sparse2dense.launch import DeviceFacts, batch_fields, is_main_process
from sparse2dense.models import load_model, load_tokenizer, save_trained
from sparse2dense.prompts import prompt_conversations
from sparse2dense.sections import GRPOSection
from sparse2dense.spec import StageSpec
from sparse2dense.stages.program import StageOutput, latest_checkpoint, training_args, training_callbacks
from sparse2dense.stages.resume import checkpoint_step

SPLIT_OF_LABELS = {"stage1": "stage1", "heldout": "heldout", "replay": "stage1"}
GROUP_STATS = "group_stats.jsonl"


class GroupRecorder:
    """The reward, recording each group's outcome: why GRPO learns where it does.

    A group whose completions all get the same reward (all right or all wrong) has zero advantage:
    no gradient. TRL logs that share over the batch (`frac_reward_zero_std`); this splits it by the
    problem's difficulty and by all-right vs all-wrong, which TRL cannot know. Each reward call
    appends the groups it saw, under the trainer's step, to `group_stats.jsonl`; a relaunched run
    first drops the steps it will redo (`keep_groups_before`), so the file is the same either way. Under several
    processes the main one writes, and counts the groups whole on it (TRL may split a group).
    """

    def __init__(self, reward: Callable[..., list[float]], group_size: int, path: Path) -> None:
        self.reward, self.group_size, self.path = reward, group_size, path
        self.__name__ = reward.__name__  # TRL logs rewards/<name>
        self.trainer = None  # set once the trainer exists: its state gives the step

    def __call__(self, completions: list, answer: list[str], **kwargs: object) -> list[float]:
        rewards = self.reward(completions, answer, **kwargs)
        ids, levels = kwargs.get("problem_id") or [], kwargs.get("difficulty") or []
        by_id: dict[str, list[int]] = {}
        for i, pid in enumerate(ids):
            by_id.setdefault(str(pid), []).append(i)
        groups = []
        for members in by_id.values():
            for start in range(0, len(members) - self.group_size + 1, self.group_size):
                chunk = members[start : start + self.group_size]
                level = levels[chunk[0]] if levels else None
                groups.append([level, sum(rewards[i] > 0 for i in chunk), len(chunk)])
        step = self.trainer.state.global_step if self.trainer is not None else 0
        if is_main_process():
            with open(self.path, "a") as fh:
                fh.write(json.dumps({"step": step, "groups": groups}) + "\n")
        return rewards


def keep_groups_before(path: Path, checkpoint: str | None) -> None:
    """Before training: drop the recorded groups a run will redo, so the file ends as an uninterrupted
    run's would. A fresh start (no checkpoint) keeps none; a resume from checkpoint-<k> keeps the
    steps before k."""
    if not path.is_file():
        return
    if checkpoint is None:
        path.unlink()
        return
    step = checkpoint_step(checkpoint)
    kept = [
        line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] < step
    ]
    path.write_text("".join(f"{line}\n" for line in kept))


def group_stats(path: Path) -> dict[str, float]:
    """From `group_stats.jsonl`: the share of zero-variance groups overall and per difficulty
    (`zero_std_difficulty_<n>`), split into all right and all wrong, and the groups counted."""
    if not path.is_file():
        return {}
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    groups = [g for record in records for g in record["groups"]]
    out: dict[str, float] = {}

    def shares(suffix: str, chosen: list) -> None:
        right = sum(correct == size for _, correct, size in chosen)
        wrong = sum(correct == 0 for _, correct, _ in chosen)
        out[f"groups{suffix}"] = float(len(chosen))
        out[f"zero_std{suffix}"] = (right + wrong) / len(chosen)
        out[f"all_right{suffix}"] = right / len(chosen)
        out[f"all_wrong{suffix}"] = wrong / len(chosen)

    if groups:
        shares("", groups)
    for level in sorted({g[0] for g in groups if g[0] is not None}):
        shares(f"_difficulty_{level}", [g for g in groups if g[0] == level])
    return out


def build_grpo_config(
    section: GRPOSection, spec: StageSpec, out_dir: Path, facts: DeviceFacts | None = None
) -> GRPOConfig:
    """Our GRPO section mapped onto TRL's GRPOConfig (`facts`: the hardware, detected when not given).

    One optimizer step takes `prompts_per_step x num_generations` completions over all processes
    (per-device batch x processes x accumulation); one generation batch holds `steps_per_generation`
    of those, so TRL's `steps_per_generation` counts micro-batches: accumulation x ours. Prompts
    reach TRL as conversations with our chat kwargs, so it renders and tokenizes them as eval does.
    """
    facts = facts or DeviceFacts.detect()
    completions = section.prompts_per_step * section.num_generations
    batches = batch_fields(completions, section.memory, facts, f"{spec.name}.memory")
    return GRPOConfig(
        **training_args(
            spec, out_dir, section.logging_steps, section.checkpoint_every, section.memory, facts
        ),
        **batches,
        steps_per_generation=batches["gradient_accumulation_steps"] * section.steps_per_generation,
        num_iterations=section.num_iterations,
        chat_template_kwargs=dict(spec.inputs_of(GRPOInputs).prompt.chat_template_kwargs),
        max_steps=section.steps,
        learning_rate=section.learning_rate,
        weight_decay=section.weight_decay,
        max_grad_norm=section.max_grad_norm,
        lr_scheduler_type="constant",
        num_generations=section.num_generations,
        max_completion_length=section.max_completion_length,
        temperature=section.temperature,
        top_p=1.0,
        top_k=0,
        epsilon=section.epsilon_low,
        epsilon_high=section.epsilon_high,
        loss_type=section.loss_type,
        beta=section.kl_beta,
        use_vllm=section.use_vllm,
        vllm_mode=section.vllm_mode,
        vllm_gpu_memory_utilization=section.vllm_gpu_memory_utilization,
        vllm_tensor_parallel_size=section.vllm_tensor_parallel_size,
        vllm_server_base_url=section.vllm_server_base_url,
        vllm_importance_sampling_correction=section.vllm_importance_sampling_correction,
        log_completions=False,
    )


def _log_series(history: list[dict], key: str) -> list[float]:
    return [float(h[key]) for h in history if key in h]


def labeled_records(splits: Path, labels: str, seed: int, max_labels: int | None = None) -> list[dict]:
    """The labeled problems a GRPO run reads: the first `max_labels` of its set (the label budget;
    budgets nest, so a smaller budget's problems are in every larger one). `replay` is the control
    of held-out stage 4: a seeded sample of the stage-1 problems as large as the held-out set, so
    with the same `steps` both arms make the same updates over as many distinct prompts."""
    if labels != "replay":
        return load_records(splits / f"{SPLIT_OF_LABELS[labels]}.jsonl")[:max_labels]
    stage1 = load_records(splits / "stage1.jsonl")[:max_labels]
    size = min(len(load_records(splits / "heldout.jsonl")), len(stage1))
    picked = sorted(random.Random(seed).sample(range(len(stage1)), size))
    return [stage1[i] for i in picked]


def run_grpo(spec: StageSpec, out_dir: Path) -> StageOutput:
    inputs = spec.inputs_of(GRPOInputs)
    section, prompt = inputs.grpo, inputs.prompt
    args = build_grpo_config(section, spec, out_dir)  # first: under ZeRO-3 it shards the loading
    tokenizer = load_tokenizer(spec, "policy")
    model = load_model(spec, "policy", trainable=True)
    records = labeled_records(
        spec.upstream_path("data") / "splits", section.labels, spec.seed, section.max_labels
    )
    conversations = prompt_conversations(records, prompt)
    rows = [
        {
            "prompt": c,
            "answer": r["answer"],
            "problem_id": str(r["id"]),
            "difficulty": (r.get("metadata") or {}).get("difficulty"),  # None where a source has none
        }
        for c, r in zip(conversations, records, strict=True)
    ]
    recorder = GroupRecorder(REWARDS[prompt.answer_format], section.num_generations, out_dir / GROUP_STATS)
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=recorder,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        callbacks=training_callbacks(spec.name, str(spec.stage), out_dir),
    )
    recorder.trainer = trainer
    checkpoint = latest_checkpoint(out_dir)
    if is_main_process():
        keep_groups_before(recorder.path, checkpoint)
    trainer.train(resume_from_checkpoint=checkpoint)
    save_trained(trainer, tokenizer, out_dir)
    history = trainer.state.log_history
    rewards = _log_series(history, "reward")
    third = max(len(rewards) // 3, 1)
    # Each generation batch is read num_iterations times; prompts drawn, repeats included:
    prompts_seen = section.steps * section.prompts_per_step // section.num_iterations
    metrics = {
        "reward_first_third": sum(rewards[:third]) / third if rewards else float("nan"),
        "reward_last_third": sum(rewards[-third:]) / third if rewards else float("nan"),
        "frac_reward_zero_std": _mean(_log_series(history, "frac_reward_zero_std")),
        "clip_ratio": _mean(_log_series(history, "clip_ratio/region_mean")),
        # Completions cut at max_completion_length: without an end they rarely state an answer.
        "truncation_ratio": _mean(_log_series(history, "completions/clipped_ratio")),
        "prompts_seen": float(prompts_seen),
        "distinct_labeled_prompts": float(len(records)),
    } | group_stats(out_dir / GROUP_STATS)
    # Distinct labeled problems whose answers the reward read; the replay control reads no new labels.
    labeled = 0 if section.labels == "replay" else min(prompts_seen, len(records))
    return StageOutput(metrics=metrics, labeled_examples=labeled)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")
