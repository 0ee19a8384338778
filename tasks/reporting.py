"""Tables and pictures of results a person compares: the eval table and its bar chart, and the
sweep report (arms over seeds, paired deltas, label budgets) with its chart.

The numbers come from `sparse2dense.statistics`; this module only picks the inputs out of the runs'
summaries and per-problem scores, and lays them out as rows and bars.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sparse2dense.graph import current
from sparse2dense.metrics import avg_metric_name
from sparse2dense.statistics import PairedDelta, mean_over_seeds, paired_delta, paired_scores


def eval_rows(evals: dict[str, dict[str, dict[str, float]]]) -> list[dict[str, Any]]:
    """One row per (model, benchmark) with avg@k +- stderr, its bootstrap CI, pass@k and maj@k."""
    rows = []
    for model, benches in evals.items():
        for bench, m in benches.items():
            avg_key = avg_metric_name(m)
            k = avg_key.split("@")[1]
            rows.append(
                {
                    "model": model,
                    "benchmark": bench,
                    f"avg@{k}": round(m[avg_key], 4),
                    "stderr": round(m[f"{avg_key}_stderr"], 4),
                    "ci95": f"[{m[f'{avg_key}_ci95_low']:.3f}, {m[f'{avg_key}_ci95_high']:.3f}]",
                    f"pass@{k}": round(m[f"pass@{k}"], 4),
                    f"maj@{k}": round(m[f"maj@{k}"], 4),
                    "problems": int(m["num_problems"]),
                }
            )
    return rows


def render_markdown_table(rows: list[dict[str, Any]]) -> str:
    headers = list(rows[0])
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(r[h]) for h in headers) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _save(fig: Any, path: Path) -> Path:
    """Lay the figure out, write it as a PNG and free it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def render_eval_plot(rows: list[dict[str, Any]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    avg_key = next(k for k in rows[0] if k.startswith("avg@"))
    labels = [f"{r['model']}\n{r['benchmark']}" for r in rows]
    fig, ax = plt.subplots(figsize=(max(4, 1.4 * len(rows)), 3.5))
    ax.bar(labels, [r[avg_key] for r in rows], yerr=[1.96 * r["stderr"] for r in rows], capsize=4)
    ax.set_ylabel(f"{avg_key} (95% CI)")
    ax.set_ylim(0, 1)
    ax.set_title("Evaluation")
    return _save(fig, path)


@dataclass(frozen=True)
class ArmSeed:
    """One arm at one seed: its `post-train` summary (None if the run failed) and its final
    student's per-problem scores, benchmark -> problem id -> mean correctness over the k samples."""

    arm: str
    seed: int
    summary: dict[str, Any] | None
    scores: dict[str, dict[str, float]]


@dataclass(frozen=True)
class Delta:
    """A paired delta a - b on one benchmark, or why there is none (`reason`)."""

    a: str
    b: str
    benchmark: str
    budgets: tuple[int | None, int | None]
    result: PairedDelta | None = None
    reason: str | None = None


def _arms(runs: list[ArmSeed]) -> dict[str, list[ArmSeed]]:
    by_arm: dict[str, list[ArmSeed]] = {}
    for run in runs:
        by_arm.setdefault(run.arm, []).append(run)
    return by_arm


def final_model() -> str:
    """The model whose scores a sweep compares: the graph's final evaluation (`student_final`)."""
    return current().final_eval.removeprefix("eval/")


def _benchmarks(runs: list[ArmSeed], model: str) -> list[str]:
    return sorted({b for r in runs if r.summary for b in r.summary["eval"].get(model, {})})


def arm_budgets(runs: list[ArmSeed]) -> dict[str, int]:
    """Each arm's label budget (the ledger total of its first completed seed)."""
    budgets: dict[str, int] = {}
    for run in runs:
        if run.summary and run.arm not in budgets:
            budgets[run.arm] = run.summary["labels"]["total"]
    return budgets


def paired_deltas(runs: list[ArmSeed], pairs: list[tuple[str, str]], model: str | None = None) -> list[Delta]:
    """Per (a, b) pair and benchmark: the paired delta over the seeds where both arms completed."""
    model = model or final_model()
    by_arm, budgets = _arms(runs), arm_budgets(runs)
    out = []
    for a, b in pairs:
        for bench in _benchmarks(runs, model):
            b_runs = {r.seed: r for r in by_arm.get(b, []) if bench in r.scores}
            seeds = [(r, b_runs[r.seed]) for r in by_arm.get(a, []) if bench in r.scores and r.seed in b_runs]
            delta = Delta(a, b, bench, (budgets.get(a), budgets.get(b)))
            if not seeds:
                out.append(replace(delta, reason="no seed where both completed"))
                continue
            try:
                pairs_by_seed = [
                    paired_scores(ra.scores[bench], rb.scores[bench], f"{a} and {b} (seed {ra.seed})")
                    for ra, rb in seeds
                ]
            except ValueError as err:
                out.append(replace(delta, reason=str(err)))
                continue
            out.append(replace(delta, result=paired_delta(pairs_by_seed)))
    return out


def _signed(x: float) -> str:
    return f"{x:+.4f}"


def _interval(low: float | None, high: float | None, signed: bool = True) -> str:
    if low is None or high is None:
        return "n/a (one seed)"
    return f"[{low:+.3f}, {high:+.3f}]" if signed else f"[{low:.3f}, {high:.3f}]"


# Column names say which interval a cell holds: run-to-run variance counted, or problem sampling only.
OVER_SEEDS = "95% CI over seeds"
OVER_PROBLEMS = "95% CI over problems"


def _has(run: ArmSeed, bench: str, model: str) -> bool:
    return run.summary is not None and bench in run.summary["eval"].get(model, {})


@dataclass(frozen=True)
class ArmMean:
    """An arm's mean avg@k over its seeds; `seeds_*` is the t interval over seeds (None with one
    seed), `problems_*` the interval from problem sampling alone: the seeds' eval standard errors
    combined, sqrt(sum se_s^2) / n, each trained run held fixed."""

    key: str
    mean: float
    seeds_low: float | None
    seeds_high: float | None
    problems_low: float
    problems_high: float
    values: tuple[float, ...]


def _arm_mean(runs: list[ArmSeed], bench: str, model: str) -> ArmMean:
    metrics = [r.summary["eval"][model][bench] for r in runs if _has(r, bench, model)]
    key = avg_metric_name(metrics[0])
    estimate = mean_over_seeds([m[key] for m in metrics])
    half = 1.96 * math.sqrt(sum(m[f"{key}_stderr"] ** 2 for m in metrics)) / len(metrics)
    return ArmMean(
        key,
        estimate.mean,
        estimate.low,
        estimate.high,
        estimate.mean - half,
        estimate.mean + half,
        estimate.values,
    )


def sweep_rows(
    runs: list[ArmSeed],
    reference: str,
    comparability: dict[str, str | None],
    deltas: list[Delta],
    model: str | None = None,
) -> list[dict[str, Any]]:
    """One row per arm: per benchmark the mean avg@k over its seeds with its interval over seeds and
    over problems, the paired delta vs the reference arm (only where the label budgets match) with
    both intervals and the verdict over seeds; labeled examples used; stages computed or cached."""
    model = model or final_model()
    vs_reference = {(d.a, d.benchmark): d for d in deltas if d.b == reference}
    benches = _benchmarks(runs, model)
    avg_keys = {  # one column name per benchmark for every row, failed arms included
        bench: avg_metric_name(next(r.summary["eval"][model][bench] for r in runs if _has(r, bench, model)))
        for bench in benches
    }
    rows = []
    for arm, arm_runs in _arms(runs).items():
        done = [r for r in arm_runs if r.summary]
        row: dict[str, Any] = {"arm": arm, "seeds": f"{len(done)}/{len(arm_runs)}"}
        for bench in benches:
            has_bench = [r for r in done if _has(r, bench, model)]
            value, seeds_ci, problems_ci = "", "", ""
            if has_bench:
                m = _arm_mean(has_bench, bench, model)
                value = round(m.mean, 4)
                seeds_ci = _interval(m.seeds_low, m.seeds_high, signed=False)
                problems_ci = _interval(m.problems_low, m.problems_high, signed=False)
            delta, delta_seeds, delta_problems, verdict = _reference_cells(
                arm, reference, comparability, vs_reference.get((arm, bench))
            )
            row |= {
                f"{bench} {avg_keys[bench]}": value,
                f"{bench} {OVER_SEEDS}": seeds_ci,
                f"{bench} {OVER_PROBLEMS}": problems_ci,
                f"{bench} delta": delta,
                f"{bench} delta {OVER_SEEDS}": delta_seeds,
                f"{bench} delta {OVER_PROBLEMS}": delta_problems,
                f"{bench} verdict (over seeds)": verdict,
            }
        statuses = [e["status"] for r in done for e in r.summary["stages"].values()]
        failed = [r.seed for r in arm_runs if not r.summary]
        row |= {
            "labels": done[0].summary["labels"]["total"] if done else "",
            "comparable": _comparable_cell(arm, comparability) if done else "",
            "computed": statuses.count("computed"),
            "cached": statuses.count("cached"),
            "status": "completed" if not failed else ("failed" if not done else f"failed at seeds {failed}"),
        }
        rows.append(row)
    return rows


def _comparable_cell(arm: str, comparability: dict[str, str | None]) -> str:
    if arm not in comparability:
        return "no reference result"
    return "yes" if comparability[arm] is None else str(comparability[arm])


def _reference_cells(
    arm: str, reference: str, comparability: dict[str, str | None], delta: Delta | None
) -> tuple[str, str, str, str]:
    if arm == reference:
        return "reference", "", "", ""
    if arm not in comparability:
        return "", "", "", ""
    if comparability[arm] is not None:
        return "not comparable", "", "", ""
    if delta is None or delta.result is None:
        return "", "", "", delta.reason if delta else ""
    r = delta.result
    return (
        _signed(r.delta),
        _interval(r.seeds_low, r.seeds_high),
        _interval(r.problems_low, r.problems_high),
        r.verdict,
    )


def comparison_rows(deltas: list[Delta]) -> list[dict[str, Any]]:
    """One row per named comparison and benchmark: the paired delta a - b, its interval over seeds
    (the verdict's) and over problems, each seed's own delta and sign, the verdict, and both label
    budgets (stated whether or not they are equal)."""
    rows = []
    for d in deltas:
        row: dict[str, Any] = {"comparison": f"{d.a} - {d.b}", "benchmark": d.benchmark}
        r = d.result
        row |= {
            "delta": _signed(r.delta) if r else "",
            OVER_SEEDS: _interval(r.seeds_low, r.seeds_high) if r else "",
            OVER_PROBLEMS: _interval(r.problems_low, r.problems_high) if r else "",
            "per seed": " / ".join(_signed(x) for x in r.per_seed) if r else "",
            "signs": "".join("+" if x > 0 else "-" if x < 0 else "0" for x in r.per_seed) if r else "",
            "verdict (over seeds)": r.verdict if r else d.reason,
            "labels a vs b": f"{_budget(d.budgets[0])} vs {_budget(d.budgets[1])}",
            "equal budgets": "yes" if d.budgets[0] == d.budgets[1] else "no",
        }
        rows.append(row)
    return rows


def _budget(value: int | None) -> str:
    return "?" if value is None else str(value)


def render_sweep_plot(
    runs: list[ArmSeed],
    comparability: dict[str, str | None],
    deltas: list[Delta],
    path: Path,
    model: str | None = None,
) -> Path:
    """Left: grouped bars, benchmarks on the x axis, one bar per arm (mean over seeds with its 95% CI
    over seeds; one seed: over problems, drawn dashed) and each seed's value as a dot; arms whose
    label budget differs from the reference are hatched. Right: every paired delta with its 95% CI
    over seeds (thick, the verdict's) and over problems (thin) against the zero line."""
    model = model or final_model()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    by_arm = {
        a: [r for r in rs if r.summary and r.summary["eval"].get(model)] for a, rs in _arms(runs).items()
    }
    arms = [a for a, rs in by_arm.items() if rs]
    benches = _benchmarks(runs, model)
    shown = [d for d in deltas if d.result]
    width = 0.8 / max(len(arms), 1)
    fig, (bars, forest) = plt.subplots(
        1,
        2,
        figsize=(max(6, 1.2 * len(arms) * len(benches)) + 5, max(4, 0.3 * len(shown) + 1)),
        gridspec_kw={"width_ratios": [max(len(arms) * len(benches), 2), 4]},
    )
    for i, arm in enumerate(arms):
        for j, bench in enumerate(benches):
            has_bench = [r for r in by_arm[arm] if _has(r, bench, model)]
            if not has_bench:
                continue
            m = _arm_mean(has_bench, bench, model)
            low, high = (
                (m.seeds_low, m.seeds_high) if m.seeds_low is not None else (m.problems_low, m.problems_high)
            )
            x = j + (i - (len(arms) - 1) / 2) * width
            hatch = None if comparability.get(arm) is None else "//"
            container = bars.bar(
                [x],
                [m.mean],
                width,
                yerr=[[m.mean - low], [high - m.mean]],
                capsize=3,
                label=arm if j == 0 else None,
                hatch=hatch,
                alpha=0.75,
                color=f"C{i % 10}",
            )
            if m.seeds_low is None:
                container.errorbar.lines[2][0].set_linestyle("--")
            dots = [x + (k - (len(m.values) - 1) / 2) * width / 6 for k in range(len(m.values))]
            bars.scatter(dots, m.values, s=14, color="black", edgecolor="white", linewidth=0.5, zorder=3)
    bars.set_xticks(range(len(benches)), benches)
    bars.set_ylabel("final student avg@k: mean over seeds, 95% CI over seeds")
    bars.set_ylim(0, 1)
    bars.set_title(
        "A dot per seed; dashed CI: one seed, over problems only; hatched: other label budget", fontsize=9
    )
    bars.legend(fontsize=7, ncol=2)
    for y, d in enumerate(shown):
        r = d.result
        color = "C0" if r.significant else "grey"
        forest.plot(
            [r.problems_low, r.problems_high], [y + 0.18, y + 0.18], color=color, linewidth=1, alpha=0.6
        )
        if r.seeds_low is not None:
            forest.plot([r.seeds_low, r.seeds_high], [y, y], color=color, linewidth=3)
        forest.plot([r.delta], [y], "o", color=color)
    forest.axvline(0.0, color="grey", linestyle="--")
    forest.set_yticks(range(len(shown)), [f"{d.a} - {d.b} ({d.benchmark})" for d in shown], fontsize=7)
    forest.invert_yaxis()
    forest.set_xlabel("paired delta a - b")
    forest.legend(
        handles=[
            Line2D([], [], color="black", linewidth=3, label=f"{OVER_SEEDS} (verdict)"),
            Line2D([], [], color="black", linewidth=1, alpha=0.6, label=f"{OVER_PROBLEMS} (runs fixed)"),
        ],
        fontsize=7,
        loc="lower right",
    )
    forest.set_title("Paired deltas (grey: the interval over seeds holds 0, or one seed)", fontsize=9)
    return _save(fig, path)


def _levels(metrics: dict[str, float], prefix: str) -> dict[int, float]:
    return {int(k.removeprefix(prefix)): v for k, v in metrics.items() if k.startswith(prefix)}


def _mean_levels(values: list[dict[int, float]]) -> dict[int, float]:
    levels = sorted({level for v in values for level in v})
    return {
        level: sum(v[level] for v in values if level in v) / sum(level in v for v in values)
        for level in levels
    }


def _level_cells(means: dict[int, float], levels: list[int]) -> dict[str, str]:
    return {f"{level}": f"{100 * means[level]:.1f}" if level in means else "" for level in levels}


def _shared(runs: list[ArmSeed], pick) -> list[tuple[str, str, list[dict[str, float]]]]:
    """(arms, what, one value per seed) for each distinct stage `pick` finds. `pick(run)` yields
    (what, stage key, value); a stage that several arms share (same key) is one replicate, listed
    under all of them, so shared stages appear once and each seed counts once."""
    by_key: dict[str, tuple[str, list[str], dict[str, float]]] = {}
    for run in runs:
        if run.summary is None:
            continue
        for what, key, value in pick(run):
            entry = by_key.setdefault(key, (what, [], value))
            entry[1].append(run.arm)
    grouped: dict[tuple[str, str], list[dict[str, float]]] = {}
    for what, arms, value in by_key.values():
        grouped.setdefault((", ".join(dict.fromkeys(arms)), what), []).append(value)
    return [(arms, what, values) for (arms, what), values in grouped.items()]


def _stage_key(run: ArmSeed, stage: str) -> str:
    entry = run.summary["stages"].get(stage) or {}
    return str(entry.get("key") or f"{stage}@{run.arm}@{run.seed}")


def difficulty_rows(runs: list[ArmSeed], model: str | None = None) -> list[dict[str, Any]]:
    """Accuracy (%) per difficulty, mean over seeds, of every evaluated model: the base models before
    any post-training, the RL'd teachers and each arm's final student; a model several arms share
    is one row naming them all. Empty when no benchmark carries a difficulty."""
    model = model or final_model()

    def pick(run: ArmSeed):
        for name, benches in run.summary["eval"].items():
            for bench, metrics in benches.items():
                levels = _levels(metrics, "acc_difficulty_")
                if levels and name in ("teacher_base", "student_base", "teacher_rl", model):
                    yield f"{name} ({bench})", f"{_stage_key(run, f'eval/{name}')}/{bench}", levels

    found = _shared(runs, pick)
    levels = sorted({lv for _, _, values in found for v in values for lv in v})
    order = ["teacher_base", "student_base", "teacher_rl", model]
    found.sort(key=lambda row: order.index(row[1].split(" ")[0]))
    return [
        {"model": what, "arms": arms, "seeds": len(values)} | _level_cells(_mean_levels(values), levels)
        for arms, what, values in found
    ]


def group_rows(runs: list[ArmSeed]) -> list[dict[str, Any]]:
    """Per GRPO stage (one row for the arms that share it), mean over seeds: the share (%) of groups
    whose completions all got the same reward (zero variance: no gradient) per difficulty, overall,
    and split into all right and all wrong. Empty when no GRPO stage recorded its groups."""

    def pick(run: ArmSeed):
        for stage, entry in run.summary["stages"].items():
            metrics = entry.get("metrics") or {}
            if "zero_std" in metrics:
                yield stage, _stage_key(run, stage), metrics

    found = _shared(runs, pick)
    levels = sorted({lv for _, _, ms in found for m in ms for lv in _levels(m, "zero_std_difficulty_")})
    rows = []
    for arms, stage, ms in found:
        mean = {k: sum(m[k] for m in ms) / len(ms) for k in ("zero_std", "all_right", "all_wrong", "groups")}
        per_level = _mean_levels([_levels(m, "zero_std_difficulty_") for m in ms])
        rows.append(
            {"stage": stage, "arms": arms, "seeds": len(ms)}
            | {f"zero-var {k}": v for k, v in _level_cells(per_level, levels).items()}
            | {
                "zero-var all": f"{100 * mean['zero_std']:.1f}",
                "all right": f"{100 * mean['all_right']:.1f}",
                "all wrong": f"{100 * mean['all_wrong']:.1f}",
                "groups per run": round(mean["groups"]),
            }
        )
    return rows


def _short(arms: str) -> str:
    names = arms.split(", ")
    return names[0] if len(names) == 1 else f"{names[0]} +{len(names) - 1}"


def render_mechanism_plot(difficulty: list[dict[str, Any]], groups: list[dict[str, Any]], path: Path) -> Path:
    """Left: accuracy per difficulty (mean over seeds), a line per model and arm. Right: the share of
    zero-variance GRPO groups per difficulty, a line per arm and GRPO stage."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (acc, zero) = plt.subplots(1, 2, figsize=(13, 5))
    for ax, rows, label_of, prefix in (
        (acc, difficulty, lambda r: f"{r['model']}: {_short(r['arms'])}", ""),
        (zero, groups, lambda r: f"{r['stage']}: {_short(r['arms'])}", "zero-var "),
    ):
        for row in rows:
            points = [
                (int(k.removeprefix(prefix)), float(v))
                for k, v in row.items()
                if k.removeprefix(prefix).isdigit() and k.startswith(prefix) and v != ""
            ]
            if points:
                style = "--" if row.get("model", "").startswith(("teacher_base", "student_base")) else "-"
                ax.plot(*zip(*points, strict=True), style, marker="o", markersize=3, label=label_of(row))
        ax.set_xlabel("difficulty (terms / steps)")
        ax.set_ylim(-2, 102)
        ax.legend(fontsize=6)
    acc.set_ylabel("accuracy %, mean over seeds (dashed: before post-training)")
    acc.set_title("Accuracy per difficulty", fontsize=9)
    zero.set_ylabel("zero-variance groups %, mean over seeds")
    zero.set_title("GRPO groups with no gradient (all right or all wrong)", fontsize=9)
    return _save(fig, path)


def _budget_points(runs: list[ArmSeed], arms: list[str], model: str) -> list[tuple[str, Any, str, dict]]:
    """(arm, ledger budget, arm run as, benchmark -> ArmMean) for each arm of the budget dimension at
    each of its budgets, smallest first: the arm itself at the base config's budget, its
    `ARM.labelsN` arms at the others."""
    by_arm, budgets = _arms(runs), arm_budgets(runs)
    points = []
    for arm in arms:
        variants = [a for a in by_arm if a == arm or a.startswith(f"{arm}.labels")]
        for variant in sorted(variants, key=lambda a: budgets.get(a, 0)):
            done = [r for r in by_arm[variant] if r.summary]
            means = {}
            for bench in _benchmarks(runs, model):
                has = [r for r in done if _has(r, bench, model)]
                if has:
                    means[bench] = _arm_mean(has, bench, model)
            points.append((arm, budgets.get(variant, ""), variant, means))
    return points


def budget_rows(runs: list[ArmSeed], arms: list[str], model: str | None = None) -> list[dict[str, Any]]:
    """Per arm of the label-budget dimension and budget (its ledger total), per benchmark: the mean
    avg@k over seeds with its 95% CI over seeds."""
    rows = []
    for arm, labels, variant, means in _budget_points(runs, arms, model or final_model()):
        row: dict[str, Any] = {"arm": arm, "labels": labels, "run as": variant}
        for bench, m in means.items():
            row |= {
                f"{bench} {m.key}": round(m.mean, 4),
                f"{bench} {OVER_SEEDS}": _interval(m.seeds_low, m.seeds_high, signed=False),
            }
        rows.append(row)
    return rows


def render_budget_plot(runs: list[ArmSeed], arms: list[str], path: Path, model: str | None = None) -> Path:
    """Final student accuracy on the first benchmark against the stage-1 label budget, a line per
    arm, with its 95% CI over seeds (none with one seed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    points = [p for p in _budget_points(runs, arms, model or final_model()) if p[3]]
    bench = next(iter(points[0][3]), None) if points else None
    for arm in dict.fromkeys(p[0] for p in points):
        line = [(labels, means[bench]) for a, labels, _, means in points if a == arm and bench in means]
        ys = [m.mean for _, m in line]
        lows = [m.mean - (m.seeds_low if m.seeds_low is not None else m.mean) for _, m in line]
        highs = [(m.seeds_high if m.seeds_high is not None else m.mean) - m.mean for _, m in line]
        ax.errorbar([x for x, _ in line], ys, yerr=[lows, highs], marker="o", capsize=3, label=arm)
    if bench is not None:
        ax.set_xscale("log", base=2)
        ax.set_ylabel(f"final student {points[0][3][bench].key} on {bench} (95% CI over seeds)")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=8)
    ax.set_xlabel("stage-1 labels read by GRPO")
    ax.set_title("Label budget", fontsize=9)
    return _save(fig, path)
