"""Where a finished sweep's time went: per stage kind, the distinct stages computed, the seconds
their tasks took (launch, imports, tracking and the work), the seconds the stage programs measured
for their own work, and the difference (the per-stage overhead).

    .venv/bin/python benchmarks/sweep_costs.py runs/sweeps/<sweep>/<flow run>/sweep.json

Reads the report's `sweep.json` (every run's summary: each stage's key, status, task wall time and
folder) and each computed stage's `manifest.json` (the program's own wall time). A stage several
runs share is counted once, where it was computed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path


def stage_costs(report: dict) -> dict[str, dict[str, float]]:
    """Stage kind (`eval`, `base`, `opd`...) -> {stages, task_s, program_s}, each computed stage once."""
    seen: set[str] = set()
    costs: dict[str, dict[str, float]] = defaultdict(lambda: {"stages": 0, "task_s": 0.0, "program_s": 0.0})
    for run in report["runs"]:
        for name, entry in ((run.get("summary") or {}).get("stages") or {}).items():
            if entry.get("status") != "computed" or entry["key"] in seen:
                continue
            seen.add(entry["key"])
            manifest = Path(entry["path"]) / "manifest.json"
            program = json.loads(manifest.read_text()).get("wall_s", 0.0) if manifest.is_file() else 0.0
            cost = costs[name.split("/")[0]]
            cost["stages"] += 1
            cost["task_s"] += float(entry.get("wall_s") or 0.0)
            cost["program_s"] += float(program)
    return dict(costs)


def render(costs: dict[str, dict[str, float]], wall_s: float | None) -> str:
    total = sum(c["task_s"] for c in costs.values()) or 1.0
    lines = [
        "| stage kind | stages | task s | share | program s | overhead s | overhead per stage s |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind, c in sorted(costs.items(), key=lambda kv: -kv[1]["task_s"]):
        over = c["task_s"] - c["program_s"]
        lines.append(
            f"| {kind} | {c['stages']:.0f} | {c['task_s']:.0f} | {100 * c['task_s'] / total:.1f}% | "
            f"{c['program_s']:.0f} | {over:.0f} | {over / c['stages']:.1f} |"
        )
    stages = sum(c["stages"] for c in costs.values())
    program = sum(c["program_s"] for c in costs.values())
    lines.append(
        f"| all | {stages:.0f} | {total:.0f} | 100% | {program:.0f} | {total - program:.0f} | "
        f"{(total - program) / max(stages, 1):.1f} |"
    )
    if wall_s:
        lines.append(f"\nsweep wall {wall_s:.0f} s: {total / wall_s:.2f} stage-seconds per second")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="a sweep's sweep.json")
    args = parser.parse_args(argv)
    if not args.report.is_file():
        print(f"sweep report not found: {args.report}", file=sys.stderr)
        return 2
    report = json.loads(args.report.read_text())
    print(render(stage_costs(report), report.get("wall_s")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
