"""The state of one ablation sweep: its MLflow parent run, the arm x seed runs' results, and the report.

Runs (every arm at every seed) have MLflow parent runs nested under the sweep's; a stage they share
is computed once and recorded as a cache hit in the others. After each run, its final student's
per-problem scores are read from the eval stage's records, so the report can pair arms problem by
problem. The report (arm table, comparison table, chart) goes to the Prefect UI as artifacts, to
MLflow as artifacts and metrics of the sweep run, and to `runs/sweeps/<name>/<flow run>/`.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run

from sparse2dense.graph import current
from sparse2dense.ledger import compare_budgets
from sparse2dense.services import embedded_tracking_uri
from sparse2dense.statistics import problem_scores
from sparse2dense.sweep import ArmRun, SweepPlan, SweepSpec
from tasks import tracking
from tasks.reporting import (
    ArmSeed,
    Delta,
    arm_budgets,
    budget_rows,
    comparison_rows,
    difficulty_rows,
    group_rows,
    paired_deltas,
    render_budget_plot,
    render_markdown_table,
    render_mechanism_plot,
    render_sweep_plot,
    sweep_rows,
)


def final_scores(summary: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Benchmark -> problem id -> mean correctness, from the final eval stage's per-sample records."""
    stage = summary["stages"].get(current().final_eval)
    if not stage:
        return {}
    scores = {}
    for path in sorted((Path(stage["path"]) / "records").glob("*.jsonl")):
        with open(path) as fh:
            scores[path.stem] = problem_scores(json.loads(line) for line in fh if line.strip())
    return scores


def _delta_record(delta: Delta) -> dict[str, Any]:
    record = asdict(delta)
    if delta.result is not None:
        record["result"]["significant"] = delta.result.significant
        record["result"]["verdict"] = delta.result.verdict
    return record


class SweepRun:
    def __init__(self, sweep: SweepSpec, runs: list[ArmRun], plan: SweepPlan) -> None:
        self.sweep, self.runs, self.plan = sweep, runs, plan
        self.results: list[ArmSeed] = []
        self.errors: dict[str, str] = {}  # run label (arm@seedN) -> why it failed
        self.started = time.monotonic()
        base = sweep.base
        runs_dir = Path(base.runs_dir).resolve()
        uri = base.tracking.tracking_uri or embedded_tracking_uri(runs_dir)
        self.client = tracking.connect(uri)
        experiment = base.tracking.experiment or sweep.name
        experiment_id = tracking.ensure_experiment(self.client, experiment, runs_dir / "mlartifacts")
        flow_run_id = str(flow_run.get_id() or "")
        self.parent_run_id = tracking.start_parent_run(
            self.client,
            experiment_id,
            name=f"sweep-{sweep.name}-{flow_run.get_name() or 'local'}",
            tags={"prefect.flow_run_id": flow_run_id, "s2d.sweep": sweep.name},
        )
        self.client.log_param(
            self.parent_run_id, "arms", json.dumps(list(dict.fromkeys(r.arm for r in runs)))
        )
        self.client.log_param(self.parent_run_id, "seeds", json.dumps(sorted({r.seed for r in runs})))
        self.client.log_param(self.parent_run_id, "reference", sweep.reference_arm)
        tracking.log_metrics(
            self.client,
            self.parent_run_id,
            {
                "plan/naive_stage_count": plan.naive_stage_count,
                "plan/distinct_stage_keys": plan.distinct_stage_keys,
            },
        )
        self.dir = runs_dir / "sweeps" / sweep.name / (flow_run_id or self.parent_run_id)
        self.dir.mkdir(parents=True, exist_ok=True)

    def record(self, run: ArmRun, summary: dict[str, Any], errors: dict[str, str]) -> None:
        """One run's outcome: its summary and final scores, or why it failed."""
        scores: dict[str, dict[str, float]] = {}
        if errors:
            self.errors[run.label] = "; ".join(f"{name}: {why}" for name, why in errors.items())
            get_run_logger().error("run %s failed: %s", run.label, self.errors[run.label])
        else:
            scores = final_scores(summary)
        self.results.append(
            ArmSeed(arm=run.arm, seed=run.seed, summary=None if errors else summary, scores=scores)
        )

    def _pairs(self) -> tuple[list[tuple[str, str]], list[tuple[str, str]], dict[str, str | None]]:
        """(each comparable arm vs the reference, the named comparisons among the arms run, verdicts)."""
        reference = self.sweep.reference_arm
        budgets = arm_budgets(self.results)
        comparability = compare_budgets(budgets, reference) if reference in budgets else {}
        arms = list(dict.fromkeys(r.arm for r in self.runs))
        vs_reference = [(a, reference) for a in arms if a != reference and comparability.get(a, "") is None]
        named = [(c.a, c.b) for c in self.sweep.comparisons if c.a in arms and c.b in arms]
        return vs_reference, named, comparability

    def finish(self) -> dict[str, Any]:
        reference = self.sweep.reference_arm
        vs_reference, named, comparability = self._pairs()
        deltas = paired_deltas(self.results, list(dict.fromkeys(vs_reference + named)))
        rows = sweep_rows(self.results, reference, comparability, deltas)
        named_deltas = [d for pair in named for d in deltas if (d.a, d.b) == pair]
        comparisons = comparison_rows(named_deltas)
        statuses = [e["status"] for r in self.results if r.summary for e in r.summary["stages"].values()]
        seeds = sorted({r.seed for r in self.runs})
        report = {
            "sweep": self.sweep.name,
            "reference": reference,
            "seeds": seeds,
            "plan": self.plan.model_dump(),
            "computed_stages": statuses.count("computed"),
            "cached_stages": statuses.count("cached"),
            "rows": rows,
            "comparisons": comparisons,
            "deltas": [_delta_record(d) for d in deltas],
            "errors": self.errors,
            "runs": [asdict(r) for r in self.results],
            "wall_s": round(time.monotonic() - self.started, 2),
        }
        header = (
            f"Sweep `{self.sweep.name}`: {len(rows)} arms x seeds {seeds}, reference "
            f"`{reference}`. Stages computed {report['computed_stages']}, cached {report['cached_stages']}; "
            f"distinct stage keys {self.plan.distinct_stage_keys} vs {self.plan.naive_stage_count} "
            "if every run started from scratch.\n\n"
            "Per arm: the mean over seeds of the final student's avg@k with two 95% intervals: "
            "**over seeds** (t over the per-seed values: counts run-to-run variance; n/a with one seed) "
            "and **over problems** (each trained run held fixed: problem sampling only). Deltas are "
            "paired on problems within a seed and averaged over seeds; the verdict (`a > b`, `a < b` "
            "or not shown) rests on the t interval over the per-seed deltas, the bootstrap over "
            "problems is shown beside it. Deltas vs the reference only between arms with equal label "
            "budgets; named comparisons state both budgets.\n\n"
        )
        budgets = self.sweep.label_budgets
        tables = {  # file stem -> (title, rows); empty tables are left out
            "comparisons": ("Comparisons (a - b)", comparisons),
            "budgets": (
                "Label budget: final student per stage-1 budget",
                budget_rows(self.results, budgets.arms) if budgets else [],
            ),
            "difficulty": ("Accuracy per difficulty (%, mean over seeds)", difficulty_rows(self.results)),
            "groups": (
                "GRPO groups with zero reward variance (%, mean over seeds): no gradient",
                group_rows(self.results),
            ),
        }
        tables = {stem: (title, t) for stem, (title, t) in tables.items() if t}
        report |= {stem: t for stem, (_, t) in tables.items() if stem != "comparisons"}
        markdown = header + render_markdown_table(rows)
        for title, table in tables.values():
            markdown += f"\n**{title}**\n\n" + render_markdown_table(table)
        (self.dir / "report.md").write_text(markdown)
        self._write_csv("report.csv", rows)
        for stem, (_, table) in tables.items():
            self._write_csv(f"{stem}.csv", table)
        (self.dir / "sweep.json").write_text(json.dumps(report, indent=2, default=str))
        plots = [render_sweep_plot(self.results, comparability, deltas, self.dir / "report.png")]
        if "difficulty" in tables or "groups" in tables:
            plots.append(
                render_mechanism_plot(
                    tables.get("difficulty", ("", []))[1],
                    tables.get("groups", ("", []))[1],
                    self.dir / "mechanism.png",
                )
            )
        if "budgets" in tables:
            plots.append(render_budget_plot(self.results, budgets.arms, self.dir / "budgets.png"))
        create_table_artifact(rows, key="sweep-report", description=header)
        for stem, (title, table) in tables.items():
            create_table_artifact(table, key=f"sweep-{stem}", description=title)
        create_markdown_artifact(markdown, key="sweep-summary", description="Ablation sweep")
        for path in [self.dir / "report.md", self.dir / "report.csv", self.dir / "sweep.json"]:
            self.client.log_artifact(self.parent_run_id, str(path))
        for stem in tables:
            self.client.log_artifact(self.parent_run_id, str(self.dir / f"{stem}.csv"))
        for plot in plots:
            self.client.log_artifact(self.parent_run_id, str(plot))
        tracking.log_metrics(
            self.client,
            self.parent_run_id,
            {"stages/computed": report["computed_stages"], "stages/cached": report["cached_stages"]}
            | self._delta_metrics(deltas),
        )
        tracking.end_run(self.client, self.parent_run_id, ok=not self.errors)
        report["report_dir"] = str(self.dir)
        return report

    def _write_csv(self, name: str, rows: list[dict[str, Any]]) -> None:
        with open(self.dir / name, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)

    @staticmethod
    def _delta_metrics(deltas: list[Delta]) -> dict[str, float]:
        """`delta/<a>-<b>/<benchmark>` with `_seeds_ci95_low/high` (over seeds; absent with one seed)
        and `_problems_ci95_low/high` (over problems), for MLflow's compare view."""
        metrics = {}
        for d in deltas:
            if d.result is not None:
                name = f"delta/{d.a}-{d.b}/{d.benchmark}"
                r = d.result
                metrics |= {
                    name: r.delta,
                    f"{name}_problems_ci95_low": r.problems_low,
                    f"{name}_problems_ci95_high": r.problems_high,
                }
                if r.seeds_low is not None and r.seeds_high is not None:
                    metrics |= {
                        f"{name}_seeds_ci95_low": r.seeds_low,
                        f"{name}_seeds_ci95_high": r.seeds_high,
                    }
        return metrics
