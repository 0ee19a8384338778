"""The `ablation-sweep` flow: every arm of a sweep as a `post-train` subflow, then the report.

Arms run in order and share every common stage through the cache (the first arm that needs a stage
key computes it, the rest get a cache hit), so the paper's seven arms train the teacher once. A
failed arm does not stop the others; the sweep fails at the end, after writing its report.
Each arm's final student is registered in MLflow with the arm in its lineage.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from flows.post_train import post_train
from sparse2dense.sweep import SweepSpec, arm_configs, sweep_plan
from tasks.sweep_run import SweepRun


class SweepFailed(RuntimeError):
    """At least one arm failed; the report was still written."""


@flow(name="ablation-sweep", log_prints=True)
def ablation_sweep(
    sweep: SweepSpec, arms: list[str] | None = None, force_rerun: list[str] | None = None
) -> dict[str, Any]:
    """Run every arm (or the named ones) as a post-train subflow, then the comparison report.

    Args:
        sweep: The base config and the arms, each a set of overrides or switched-off stages.
        arms: Run only these arms (none: every arm).
        force_rerun: Stages or stage kinds to recompute even when cached (once per stage key).
    """
    configs = arm_configs(sweep, arms)
    plan = sweep_plan(configs)
    get_run_logger().info(
        "sweep %s: %d arms, %d distinct stage keys (%d if every arm ran alone)",
        sweep.name,
        len(configs),
        plan.distinct_stage_keys,
        plan.naive_stage_count,
    )
    run = SweepRun(sweep, configs, plan)
    for arm, cfg in configs.items():
        arm_flow = post_train.with_options(flow_run_name=f"{sweep.name}-{arm}")
        forced = run.forced_stages(arm, force_rerun or [])
        state = arm_flow(cfg, forced, run.parent_run_id, arm=arm, return_state=True)
        run.record(arm, state)
    report = run.finish()
    if run.errors:
        raise SweepFailed(f"arms failed: {sorted(run.errors)}; report: {report['report_dir']}")
    return report
