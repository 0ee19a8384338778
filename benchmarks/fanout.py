"""Fan-out against running in sequence: the same micro sweep, from an empty store each time.

Four arms of configs/sweeps/toy-ablations.yaml (full_bridge, no_warmup, no_opd, direct_grpo) on the
micro toy world of the tests, one seed, run side by side in one process under one temporary Prefect
server, each mode from its own empty store:

  sequential   schedule.max_parallel=1, one thread per stage
  fan-out      schedule.max_parallel=WORKERS, one thread per stage
  sequential, all threads   max_parallel=1, torch's default threads (what a 1-stage-at-a-time run uses)

Prints each mode's wall time, stages computed vs distinct stage keys, and the ratios; writes them to
OUT/fanout.json. Run:
  python benchmarks/fanout.py [--workers 2] [--repeats 1] [--out runs/bench-fanout]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

from sparse2dense.sweep import load_sweep  # noqa: E402
from tests.conftest import MICRO  # noqa: E402

ARMS = ["full_bridge", "no_warmup", "no_opd", "direct_grpo"]
SWEEP = ROOT / "configs" / "sweeps" / "toy-ablations.yaml"


def run_mode(name: str, work: Path, schedule: list[str]) -> dict:
    from flows.sweep import ablation_sweep

    shutil.rmtree(work, ignore_errors=True)
    paths = [f"store_dir={work / 'store'}", f"runs_dir={work / 'runs'}", "name=bench"]
    spec = load_sweep(SWEEP, [*MICRO, *paths, *schedule], seeds=[1])
    started = time.monotonic()
    report = ablation_sweep(spec, arms=ARMS)
    wall_s = time.monotonic() - started
    return {
        "mode": name,
        "schedule": schedule,
        "wall_s": round(wall_s, 1),
        "computed": report["computed_stages"],
        "distinct": report["plan"]["distinct_stage_keys"],
        "naive": report["plan"]["naive_stage_count"],
        "errors": report["errors"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-fanout")
    args = parser.parse_args()
    from prefect.testing.utilities import prefect_test_harness

    modes = {
        "sequential": ["schedule.max_parallel=1", "schedule.threads_per_stage=1"],
        "fan-out": [f"schedule.max_parallel={args.workers}", "schedule.threads_per_stage=1"],
        "sequential, all threads": ["schedule.max_parallel=1"],
    }
    rows = []
    with prefect_test_harness(server_startup_timeout=180):
        for repeat in range(args.repeats):
            for name, schedule in modes.items():
                row = run_mode(
                    name, args.out / f"{name.replace(' ', '').replace(',', '-')}-{repeat}", schedule
                )
                rows.append(row | {"repeat": repeat})
                print(json.dumps(row), flush=True)
    best = {name: min(r["wall_s"] for r in rows if r["mode"] == name) for name in modes}
    summary = {
        "cores": os.cpu_count(),
        "workers": args.workers,
        "arms": ARMS,
        "rows": rows,
        "speedup_vs_sequential": round(best["sequential"] / best["fan-out"], 2),
        "speedup_vs_sequential_all_threads": round(best["sequential, all threads"] / best["fan-out"], 2),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fanout.json").write_text(json.dumps(summary, indent=2))
    print("\n| mode | wall s | computed / distinct (naive) |\n|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['wall_s']} | {r['computed']} / {r['distinct']} ({r['naive']}) |")
    print(
        f"\nfan-out on {args.workers} workers: {summary['speedup_vs_sequential']}x the sequential run "
        f"(one thread per stage), {summary['speedup_vs_sequential_all_threads']}x the sequential run on all threads"
    )


if __name__ == "__main__":
    main()
