"""teacher_rollouts: sample completions from the (RL'd) teacher on the unlabeled prompt pool.

No labels are read. Writes `rollouts/train.jsonl` (the warmup's data) and `rollouts/heldout.jsonl`
(fixed teacher sequences on which the warmup reports forward KL before and after), each line with
the rendered prompt, the completion text and both token-id lists. Sampling runs in shards of
`batch_size` prompts, shard i with seed + i, so a relaunched stage keeps its finished shards.

    python -m sparse2dense.stages.teacher_rollouts SPEC.json
"""

from __future__ import annotations

import dataclasses
import functools
import random
from pathlib import Path

from sparse2dense.data import load_records, save_records
from sparse2dense.generation import SamplingParams, open_generator, resolve_backend
from sparse2dense.graph import RolloutInputs, Stage
from sparse2dense.models import load_tokenizer
from sparse2dense.prompts import render_prompts
from sparse2dense.spec import StageSpec
from sparse2dense.stages.program import ShardedGeneration, StageOutput, run_stage, shard_seed


def sample_shard(generator, tokenizer, sampling: SamplingParams, index: int, shard: list) -> list[dict]:
    """Rollout rows of one shard of (problem, prompt) pairs, sampled with the shard's own seed."""
    prompts = [t for _, t in shard]
    shard_sampling = dataclasses.replace(sampling, seed=shard_seed(sampling.seed, index))
    groups = generator(prompts, shard_sampling, label=f"teacher rollouts shard {index}")
    rows = []
    for (problem, text), group in zip(shard, groups, strict=True):
        prompt_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        for completion in group:
            rows.append(
                {
                    "id": problem["id"],
                    "prompt": text,
                    "completion": completion.text,
                    "prompt_ids": prompt_ids,
                    "completion_ids": completion.token_ids,
                    "finish_reason": completion.finish_reason,
                }
            )
    return rows


def run_teacher_rollouts(spec: StageSpec, out_dir: Path) -> StageOutput:
    inputs = spec.inputs_of(RolloutInputs)
    section, prompt = inputs.rollouts, inputs.prompt
    tokenizer = load_tokenizer(spec, "teacher")
    generator = open_generator(
        spec,
        "teacher",
        tokenizer,
        resolve_backend(section.backend),
        batch_size=section.batch_size,
        tensor_parallel_size=section.vllm_tensor_parallel_size,
        gpu_memory_utilization=section.vllm_gpu_memory_utilization,
    )
    problems = load_records(spec.upstream_path("data") / "splits/unlabeled.jsonl")
    prompts = render_prompts(tokenizer, problems, prompt)
    sampling = SamplingParams.from_section(section, n=section.samples_per_prompt, seed=spec.seed)
    shards = ShardedGeneration(spec.name, str(spec.stage), out_dir)
    produce = functools.partial(sample_shard, generator, tokenizer, sampling)
    rows = shards.run("rollouts", list(zip(problems, prompts, strict=True)), section.batch_size, produce)
    # Hold out whole prompts, so held-out KL is measured on prompts the warmup never trained on.
    ids = sorted({r["id"] for r in rows})
    random.Random(spec.seed).shuffle(ids)
    heldout_ids = set(ids[: max(1, round(len(ids) * section.heldout_fraction))])
    train = [r for r in rows if r["id"] not in heldout_ids]
    heldout = [r for r in rows if r["id"] in heldout_ids]
    save_records(out_dir / "rollouts/train.jsonl", train)
    save_records(out_dir / "rollouts/heldout.jsonl", heldout)
    lengths = [len(r["completion_ids"]) for r in rows]
    return StageOutput(
        metrics={
            "num_train": float(len(train)),
            "num_heldout": float(len(heldout)),
            "response_length_mean": sum(lengths) / max(len(lengths), 1),
            "truncation_ratio": sum(r["finish_reason"] == "length" for r in rows) / max(len(rows), 1),
        }
    )


def main() -> None:
    run_stage(Stage.TEACHER_ROLLOUTS, run_teacher_rollouts)


if __name__ == "__main__":
    main()
