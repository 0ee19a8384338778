"""Did training help? Each role's trained model against its own start, per run and over runs.

A run evaluates each role before and after its training on the same problems (`eval/teacher_base`
-> `eval/teacher_rl`, `eval/student_base` -> `eval/student_final`). `run_gains` pairs the two by
problem id and gives each benchmark's paired delta with a bootstrap interval over problems: within one
run that interval covers problem sampling only. `gains_over_runs` takes runs at different seeds and adds
the t interval over their per-run deltas, which counts run-to-run variance too (training, sampling and
each seed's own data draw); with three runs it is wide, as it should be.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sparse2dense.statistics import (
    PairedDelta,
    SeedMean,
    mean_over_seeds,
    paired_delta,
    paired_scores,
    problem_scores,
)

# (role, trained model's eval stage, starting model's eval stage)
BEFORE_AFTER = (
    ("teacher", "eval/teacher_rl", "eval/teacher_base"),
    ("student", "eval/student_final", "eval/student_base"),
)


class SummaryError(ValueError):
    """A summary that cannot be read or compared; the message names the path."""


@dataclass(frozen=True)
class FinishedRun:
    """What the comparison needs from one run's `summary.json`: its seed and eval stage folders."""

    path: Path
    seed: int | None
    eval_dirs: dict[str, Path]  # eval stage name -> its stage folder (records/<benchmark>.jsonl)


@dataclass(frozen=True)
class Gain:
    """One role's before -> after on one benchmark in one run (fractions; delta has the interval)."""

    role: str
    benchmark: str
    before: float
    after: float
    delta: PairedDelta


@dataclass(frozen=True)
class GainOverRuns:
    """A role's gain on one benchmark over runs: the t interval over per-run deltas (`over_runs`) and
    the pooled bootstrap over problems (`problems`, which treats every trained model as fixed)."""

    role: str
    benchmark: str
    seeds: tuple[int | None, ...]
    over_runs: SeedMean
    problems: PairedDelta


def read_summary(path: str | Path) -> FinishedRun:
    """A run's `summary.json`, or the run folder holding it."""
    path = Path(path)
    if path.is_dir():
        path = path / "summary.json"
    if not path.is_file():
        raise SummaryError(f"run summary not found: {path}")
    try:
        summary = json.loads(path.read_text())
        stages = summary["stages"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise SummaryError(f"{path}: not a run summary ({err})") from None
    if summary.get("status") != "completed":
        raise SummaryError(f"{path}: the run did not complete (status {summary.get('status')!r})")
    eval_dirs = {
        name: Path(s["path"]) for name, s in stages.items() if name.startswith("eval/") and s.get("path")
    }
    return FinishedRun(path=path, seed=_seed_of(stages), eval_dirs=eval_dirs)


def _seed_of(stages: dict) -> int | None:
    """The run's seed, from its data preparation's spec (each stage folder keeps the spec it ran)."""
    data_prep = stages.get("data_prep", {}).get("path")
    spec = Path(data_prep) / "spec.json" if data_prep else None
    if spec is None or not spec.is_file():
        return None
    return json.loads(spec.read_text()).get("seed")


def _scores(stage_dir: Path, benchmark: str) -> dict[str, float]:
    path = stage_dir / "records" / f"{benchmark}.jsonl"
    if not path.is_file():
        raise SummaryError(f"eval records not found: {path} (was the store moved or cleaned?)")
    with path.open() as lines:
        return problem_scores(json.loads(line) for line in lines if line.strip())


def _pairs(run: FinishedRun, role: str, benchmark: str) -> tuple[list[float], list[float]]:
    """(after, before) problem scores of `role` on `benchmark`, in one problem order."""
    after_stage, before_stage = next((a, b) for r, a, b in BEFORE_AFTER if r == role)
    try:
        return paired_scores(
            _scores(run.eval_dirs[after_stage], benchmark),
            _scores(run.eval_dirs[before_stage], benchmark),
            what=f"the {role}'s models",
        )
    except ValueError as err:
        raise SummaryError(f"{run.path}: {benchmark}: {err}") from None


def _compared(run: FinishedRun) -> list[tuple[str, str]]:
    """(role, benchmark) for every role evaluated before and after, on the benchmarks it was given."""
    out = []
    for role, after_stage, before_stage in BEFORE_AFTER:
        if after_stage in run.eval_dirs and before_stage in run.eval_dirs:
            records = run.eval_dirs[before_stage] / "records"
            out += [(role, p.stem) for p in sorted(records.glob("*.jsonl"))]
    return out


def run_gains(run: FinishedRun, rng_seed: int = 0) -> list[Gain]:
    """Every role's before -> after in one run, per benchmark."""
    gains = []
    for role, benchmark in _compared(run):
        after, before = _pairs(run, role, benchmark)
        gains.append(
            Gain(
                role=role,
                benchmark=benchmark,
                before=sum(before) / len(before),
                after=sum(after) / len(after),
                delta=paired_delta([(after, before)], rng_seed=rng_seed),
            )
        )
    return gains


def gains_over_runs(runs: Sequence[FinishedRun], rng_seed: int = 0) -> list[GainOverRuns]:
    """Per (role, benchmark) every run has: the interval over runs and the pooled one over problems."""
    if not runs:
        return []
    others = [set(_compared(run)) for run in runs[1:]]
    out = []
    for role, benchmark in _compared(runs[0]):
        if not all((role, benchmark) in compared for compared in others):
            continue
        pooled = paired_delta([_pairs(run, role, benchmark) for run in runs], rng_seed=rng_seed)
        out.append(
            GainOverRuns(
                role=role,
                benchmark=benchmark,
                seeds=tuple(run.seed for run in runs),
                over_runs=mean_over_seeds(pooled.per_seed),  # each run's own mean difference
                problems=pooled,
            )
        )
    return out


def _points(x: float) -> str:
    return f"{100 * x:+.1f}"


def render(runs: Sequence[FinishedRun], rng_seed: int = 0) -> str:
    """A Markdown table of every run's gains, then the gains over runs when there are several."""
    lines = [
        "| role | benchmark | seed | before % | after % | delta (points) | 95% CI over problems |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        for g in run_gains(run, rng_seed):
            lines.append(
                f"| {g.role} | {g.benchmark} | {run.seed if run.seed is not None else '?'} | "
                f"{100 * g.before:.1f} | {100 * g.after:.1f} | {_points(g.delta.delta)} | "
                f"[{_points(g.delta.problems_low)}, {_points(g.delta.problems_high)}] |"
            )
    if len(runs) > 1:
        lines += [
            "",
            f"over {len(runs)} runs (seeds {', '.join(str(r.seed) for r in runs)}):",
            "",
            "| role | benchmark | mean delta (points) | 95% t interval over runs | pooled 95% CI over problems | per run |",
            "|---|---|---|---|---|---|",
        ]
        for g in gains_over_runs(runs, rng_seed):
            spread = (
                f"[{_points(g.over_runs.low)}, {_points(g.over_runs.high)}]"
                if g.over_runs.low is not None
                else "n/a"
            )
            lines.append(
                f"| {g.role} | {g.benchmark} | {_points(g.over_runs.mean)} | {spread} | "
                f"[{_points(g.problems.problems_low)}, {_points(g.problems.problems_high)}] | "
                f"{', '.join(_points(v) for v in g.over_runs.values)} |"
            )
    return "\n".join(lines)
