"""Per-stage overhead of the orchestration wrapping, measured side by side in one run.

For each stage of a tiny toy pipeline this compares
  wrapped: the Prefect task's wall time (subprocess launch + imports + MLflow child run + manifest
           hashing + Prefect state/result bookkeeping + the work itself), and
  bare:    the same stage body (same model, same data, same TRL trainer and steps) called in this
           one process, with libraries already imported,
and prints the ratio. Run:  .venv/bin/python benchmarks/overhead.py [--demo] [--set field=value ...]
(`--demo`: the toy preset as `make demo` runs it; default: the tiny world of the flow tests).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BODIES = {
    "data_prep": ("sparse2dense.stages.data_prep", "run_data_prep"),
    "base": ("sparse2dense.stages.base", "run_base"),
    "teacher_rl": ("sparse2dense.stages.grpo", "run_grpo"),
    "teacher_rollouts": ("sparse2dense.stages.teacher_rollouts", "run_teacher_rollouts"),
    "warmup": ("sparse2dense.stages.warmup", "run_warmup"),
    "opd": ("sparse2dense.stages.opd", "run_opd"),
    "eval": ("sparse2dense.stages.eval", "run_eval"),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--demo", action="store_true", help="the full toy preset instead of the tiny world")
    args = parser.parse_args()
    from sparse2dense.config import load_config
    from sparse2dense.spec import load_spec
    from tests.conftest import MICRO

    work = Path(tempfile.mkdtemp(prefix="s2d-bench-"))
    overrides = [
        *([] if args.demo else MICRO),
        f"store_dir={work / 'store'}",
        f"runs_dir={work / 'runs'}",
        *args.set,
    ]
    cfg = load_config(ROOT / "configs/toy.yaml", overrides)
    os.environ["PREFECT_HOME"] = str(work / "prefect")
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ["HF_HUB_OFFLINE"] = "1"
    from flows.post_train import post_train

    summary = post_train(cfg)
    os.environ.pop("MLFLOW_RUN_ID", None)
    rows = []
    for name, entry in summary["stages"].items():
        spec = load_spec(Path(entry["path"]) / "spec.json")
        module, fn = BODIES[str(spec.stage) if spec.stage != "student_rl" else "teacher_rl"]
        body = getattr(importlib.import_module(module), fn)
        out = work / "bare" / name.replace("/", "_")
        out.mkdir(parents=True)
        bare_spec = spec.model_copy(update={"output_dir": str(out)})
        from transformers import set_seed

        set_seed(spec.seed)
        started = time.perf_counter()
        body(bare_spec, out)
        bare = time.perf_counter() - started
        rows.append((name, entry["wall_s"], bare, entry["wall_s"] / bare))
    print(f"\n{'stage':<22}{'wrapped_s':>10}{'bare_s':>10}{'ratio':>8}{'overhead_s':>12}")
    for name, wrapped, bare, ratio in rows:
        print(f"{name:<22}{wrapped:>10.1f}{bare:>10.1f}{ratio:>8.2f}{wrapped - bare:>12.1f}")
    total_w, total_b = sum(r[1] for r in rows), sum(r[2] for r in rows)
    print(f"{'total':<22}{total_w:>10.1f}{total_b:>10.1f}{total_w / total_b:>8.2f}{total_w - total_b:>12.1f}")
    (work / "overhead.json").write_text(json.dumps(rows))


if __name__ == "__main__":
    main()
