"""The `ablation-sweep` flow: every arm at every seed, all in one fan-out, then the report.

The runs' stages are scheduled together (`tasks/fanout.py`): a stage several runs share (same key)
is computed once, and every distinct stage starts as soon as the stages it reads are done, up to the
base config's `schedule.max_parallel` at once, so independent arms and seeds run side by side. An
arm at seed N is exactly `s2d run BASE <arm overrides> --set seed=N` (same keys). Each run keeps
its own MLflow parent run, nested under the sweep's, and its summary; its stages' task runs carry
its label (`arm@seedN`). A failed stage fails the runs that need it and not the others; the sweep
fails at the end, after writing its report: the flow run ends Failed with a one-line message (no
traceback: the stages' own logs say why), and a caller gets `SweepFailed` carrying the report. Each
completed run's final student is registered in MLflow with its arm and seed in its lineage.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.exceptions import TerminationSignal
from prefect.states import Failed, State

from flows.post_train import register
from sparse2dense.pipeline import plan_stages, unknown_forced
from sparse2dense.preflight import check_configured_models
from sparse2dense.sweep import SweepSpec, arm_runs, sweep_plan
from tasks.fanout import fan_out
from tasks.run_context import PipelineRun
from tasks.stages import stop_stages
from tasks.sweep_run import SweepRun


class SweepFailed(RuntimeError):
    """At least one run failed; the report was still written, and travels with the error."""

    def __init__(self, message: str, report: dict[str, Any]) -> None:
        super().__init__(message)
        self.report = report

    def __reduce__(self) -> tuple[Any, ...]:  # Prefect keeps a failed flow's error as a result record
        return type(self), (str(self), self.report)


@flow(name="ablation-sweep", log_prints=True)
def ablation_sweep(
    sweep: SweepSpec, arms: list[str] | None = None, force_rerun: list[str] | None = None
) -> dict[str, Any] | State:
    """Run every arm (or the named ones) at every seed, sharing and fanning out their stages, then the report.

    Args:
        sweep: The base config and the arms, each a set of overrides or switched-off stages.
        arms: Run only these arms (none: every arm).
        force_rerun: Stages or stage kinds to recompute even when cached (once per stage key).
    """
    runs = arm_runs(sweep, arms)
    if problem := unknown_forced(force_rerun or [], [plan_stages(r.config) for r in runs]):
        raise ValueError(f"force_rerun: {problem}")
    plan = sweep_plan(runs)
    get_run_logger().info(
        "sweep %s: %d arms x %d seeds, %d distinct stage keys (%d if every run started from scratch), "
        "up to %d stages at once",
        sweep.name,
        len(runs) // len(sweep.run_seeds),
        len(sweep.run_seeds),
        plan.distinct_stage_keys,
        plan.naive_stage_count,
        sweep.base.schedule.max_parallel,
    )
    pairs = {
        (r.config.teacher, r.config.student) for r in runs if r.config.warmup.enabled or r.config.opd.enabled
    }
    for teacher, student in pairs:
        check_configured_models(teacher, student)
    report_run = SweepRun(sweep, runs, plan)
    contexts = [
        PipelineRun(r.config, force_rerun, plan_stages(r.config), report_run.parent_run_id, label=r.label)
        for r in runs
    ]
    try:
        fan_out(contexts, sweep.base.schedule)
    except (KeyboardInterrupt, TerminationSignal) as stop:
        stop_stages()  # as in post-train: nothing outlives the flow run, each summary says why
        for context in contexts:
            context.errors.setdefault(
                "interrupted", f"{type(stop).__name__}; the same command resumes the sweep"
            )
        raise
    finally:
        for arm_run, context in zip(runs, contexts, strict=True):
            summary = context.finish()
            if not context.failed:
                register(arm_run.config, summary, arm_run.arm)
            report_run.record(arm_run, summary, context.errors)
    report = report_run.finish()
    if report_run.errors:
        # A Failed state rather than a raise: Prefect records the message without a traceback of
        # this function, and the caller still gets the error (with the report) raised.
        message = f"runs failed: {sorted(report_run.errors)}; report: {report['report_dir']}"
        return Failed(message=message, data=SweepFailed(message, report))
    return report
