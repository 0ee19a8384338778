"""The `ablation-sweep` flow: every arm at every seed as a `post-train` subflow, then the report.

Runs go seed by seed, arm by arm, and share every common stage through the cache (the first run that
needs a stage key computes it, the rest get a cache hit), so within a seed the paper's arms train the
teacher once; an arm at seed N is exactly `s2d run BASE <arm overrides> --set seed=N`. A failed run
does not stop the others; the sweep fails at the end, after writing its report.
Each run's final student is registered in MLflow with its arm and seed in its lineage.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from flows.post_train import post_train
from sparse2dense.sweep import SweepSpec, arm_runs, sweep_plan
from tasks.sweep_run import SweepRun


class SweepFailed(RuntimeError):
    """At least one run failed; the report was still written."""


@flow(name="ablation-sweep", log_prints=True)
def ablation_sweep(
    sweep: SweepSpec, arms: list[str] | None = None, force_rerun: list[str] | None = None
) -> dict[str, Any]:
    """Run every arm (or the named ones) at every seed as a post-train subflow, then the report.

    Args:
        sweep: The base config and the arms, each a set of overrides or switched-off stages.
        arms: Run only these arms (none: every arm).
        force_rerun: Stages or stage kinds to recompute even when cached (once per stage key).
    """
    runs = arm_runs(sweep, arms)
    plan = sweep_plan(runs)
    get_run_logger().info(
        "sweep %s: %d arms x %d seeds, %d distinct stage keys (%d if every run started from scratch)",
        sweep.name,
        len(runs) // len(sweep.run_seeds),
        len(sweep.run_seeds),
        plan.distinct_stage_keys,
        plan.naive_stage_count,
    )
    run = SweepRun(sweep, runs, plan)
    for arm_run in runs:
        arm_flow = post_train.with_options(flow_run_name=f"{sweep.name}-{arm_run.arm}-seed{arm_run.seed}")
        forced = run.forced_stages(arm_run, force_rerun or [])
        state = arm_flow(arm_run.config, forced, run.parent_run_id, arm=arm_run.arm, return_state=True)
        run.record(arm_run, state)
    report = run.finish()
    if run.errors:
        raise SweepFailed(f"runs failed: {sorted(run.errors)}; report: {report['report_dir']}")
    return report
