"""The stage contract, shared by every stage program.

`run_stage(Stage.X, body)` reads SPEC.json, skips work whose manifest already verifies, seeds
everything, runs `body(spec, out_dir)`, and writes `manifest.json` last (atomically). A crash
leaves no manifest, so a failure can never be cached as a success. Trainer checkpoints and generation
shards live in `out_dir/checkpoints` while a stage runs; a relaunched stage resumes from them (see
`resume.py`, which also documents the S2D_FAIL_AT fault-injection switch), and they are removed once
the result is final. The manifest records `resumed_from_step`, outside the content digest, so a
resumed result is interchangeable with an uninterrupted one. Under a distributed launcher every
process runs the body (training is collective); only the main process removes checkpoints and
writes the manifest, so there is exactly one. Non-finite metrics (a loss never logged) are left out.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sparse2dense.graph import Stage, current
from sparse2dense.launch import (
    DeviceFacts,
    is_main_process,
    peak_memory_line,
    process_rank,
    process_world_size,
)
from sparse2dense.spec import StageSpec, load_spec, result_problem
from sparse2dense.stages.resume import (
    CHECKPOINTS,
    ShardedGeneration,
    latest_checkpoint,
    logged_mean_loss,
    resume_point,
    shard_seed,
    training_callbacks,
)
from sparse2dense.store import MANIFEST, write_manifest

__all__ = [
    "CHECKPOINTS",
    "ShardedGeneration",
    "StageOutput",
    "latest_checkpoint",
    "logged_mean_loss",
    "run_stage",
    "shard_seed",
    "training_args",
    "training_callbacks",
]


@dataclass
class StageOutput:
    metrics: dict[str, float] = field(default_factory=dict)
    labeled_examples: int = 0


def library_versions() -> dict[str, str]:
    import importlib.metadata as md

    names = ["sparse2dense", "torch", "transformers", "trl", "datasets", "accelerate", "sympy", "math-verify"]
    out = {}
    for name in names:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            continue
    return out


def training_args(
    spec: StageSpec,
    out_dir: Path,
    logging_steps: int,
    save_steps: int,
    memory: Any = None,
    facts: DeviceFacts | None = None,
) -> dict[str, Any]:
    """TrainingArguments fields every TRL trainer here shares: where, how often, which device.

    bf16 and gradient checkpointing follow the hardware (`facts`, detected when not given) unless the
    stage's memory plan sets them.
    """
    facts = facts or DeviceFacts.detect()
    on_gpu = facts.cuda
    bf16 = facts.bf16_supported if getattr(memory, "bf16", None) is None else memory.bf16
    checkpointing = getattr(memory, "gradient_checkpointing", None)
    return {
        "output_dir": str(out_dir / CHECKPOINTS),
        "seed": spec.seed,
        "data_seed": spec.seed,
        "logging_steps": logging_steps,
        "save_strategy": "steps",
        "save_steps": save_steps,
        "save_total_limit": 1,
        "report_to": ["mlflow"] if os.environ.get("MLFLOW_RUN_ID") else [],
        "run_name": spec.name,
        "use_cpu": not on_gpu,
        "bf16": bf16,
        "fp16": False,
        "gradient_checkpointing": on_gpu if checkpointing is None else checkpointing,
        "dataloader_num_workers": 0,
        "disable_tqdm": False,
        "save_only_model": False,
    }


def run_stage(stage: Stage, body: Callable[[StageSpec, Path], StageOutput]) -> None:
    if len(sys.argv) != 2:
        sys.exit(f"usage: python -m sparse2dense.stages.{stage} SPEC.json")
    spec = load_spec(sys.argv[1])
    if current().stage(spec.stage).program != stage:
        sys.exit(f"spec is for stage {spec.stage}, whose program is not {stage}")
    out_dir = Path(spec.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if (out_dir / MANIFEST).exists():
        problem = result_problem(spec, out_dir)
        if problem is None:
            print(f"[{spec.name}] already complete at {out_dir}", flush=True)
            return
        print(f"[{spec.name}] discarding incomplete result: {problem}", flush=True)
        (out_dir / MANIFEST).unlink(missing_ok=True)  # every process may get here

    from transformers import set_seed

    world_size = process_world_size()
    if world_size > 1:
        print(f"[{spec.name}] process {process_rank()} of {world_size}", flush=True)
    set_seed(spec.seed)
    resumed_from_step, resuming = resume_point(out_dir)
    if resuming:
        print(f"[{spec.name}] {resuming}", flush=True)
    started = time.time()
    output = body(spec, out_dir)
    wall_s = time.time() - started
    if line := peak_memory_line(spec.name):
        print(line, flush=True)
    if not is_main_process():
        return
    shutil.rmtree(out_dir / CHECKPOINTS, ignore_errors=True)
    metrics = {k: v for k, v in output.metrics.items() if math.isfinite(v)}
    write_manifest(
        out_dir,
        {
            "key": spec.key,
            "stage": str(spec.stage),
            "name": spec.name,
            "config": spec.config,
            "upstream": {r: {"key": u.key, "digest": u.manifest_digest} for r, u in spec.upstream.items()},
            "metrics": metrics,
            "labeled_examples": output.labeled_examples,
            "seed": spec.seed,
            "versions": library_versions(),
            "wall_s": wall_s,
            "world_size": world_size,
            "resumed_from_step": resumed_from_step,
        },
    )
    summary = {"stage": spec.name, "wall_s": round(wall_s, 2), "metrics": metrics}
    if resumed_from_step is not None:
        summary["resumed_from_step"] = resumed_from_step
    print(json.dumps(summary), flush=True)
