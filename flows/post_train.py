"""The `post-train` flow: teacher RL -> teacher rollouts -> forward-KL warmup -> OPD -> [student RL],
with evaluations of the raw and final student and of the teacher before and after RL.

The stages are the plan of `sparse2dense.pipeline.plan_stages`, read off the stage graph; each is a
cached, retryable Prefect task, started as soon as the stages it reads are done, up to
`schedule.max_parallel` at once (`tasks/fanout.py`): evaluations run beside the next training stage. `force_rerun` names stages (or stage kinds) to recompute regardless of the cache;
`parent_run_id` nests the run's MLflow parent under another run (the sweep sets it). A completed
run registers its final student in MLflow's model registry (`tasks/registry.py`).
"""

from __future__ import annotations

from typing import Any

from mlflow.exceptions import MlflowException
from prefect import flow, get_run_logger
from prefect.exceptions import TerminationSignal

from sparse2dense.config import PipelineConfig
from sparse2dense.pipeline import plan_stages
from sparse2dense.preflight import check_configured_models
from tasks.fanout import fan_out
from tasks.registry import record_registration, register_final_student
from tasks.run_context import PipelineRun
from tasks.stages import StageFailed, stop_stages


@flow(name="post-train", log_prints=True)
def post_train(
    config: PipelineConfig,
    force_rerun: list[str] | None = None,
    parent_run_id: str | None = None,
    arm: str | None = None,
) -> dict[str, Any]:
    """Post-train the student from the teacher and register it.

    Args:
        config: The whole pipeline: models, data and one section per stage.
        force_rerun: Stages (opd, eval/student_final) or stage kinds (eval) to recompute even when cached.
        parent_run_id: MLflow run to nest this run's parent run under (set by the sweep).
        arm: The sweep arm this run is, recorded in the registered student's lineage (set by the sweep).
    """
    if config.warmup.enabled or config.opd.enabled:
        check_configured_models(config.teacher, config.student)
    run = PipelineRun(config, force_rerun, plan_stages(config), parent_run_id)
    summary = complete(run, config)
    register(config, summary, arm)
    return summary


def register(config: PipelineConfig, summary: dict[str, Any], arm: str | None) -> None:
    """Register a completed run's final student in MLflow's model registry, noted in its summary."""
    try:
        registration = register_final_student(config, summary, arm)
    except (MlflowException, OSError) as err:
        # The student stays in the store and the summary; only its registry entry is missing.
        get_run_logger().warning("final student not registered in MLflow: %s", err)
        registration = {"error": str(err)}
    record_registration(summary, registration)
    if registration and "uri" in registration:
        print(f"final student registered as {registration['uri']}")


def complete(run: PipelineRun, config: PipelineConfig) -> dict[str, Any]:
    """Run every stage of one pipeline run; the summary is written whether or not a stage fails."""
    try:
        fan_out([run], config.schedule)
    except (KeyboardInterrupt, TerminationSignal) as stop:
        # Ctrl-C or a cancellation: no stage program outlives the flow run, and the summary says why
        stop_stages()
        run.errors.setdefault("interrupted", f"{type(stop).__name__}; the same command resumes the run")
        raise
    finally:
        summary = run.finish()
    if run.failed:
        raise StageFailed("; ".join(f"{name}: {why}" for name, why in run.errors.items()))
    return summary
