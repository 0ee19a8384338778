"""The `run-stage` flow: one stage as a flow run of its own, on whatever work pool its deployment
names. With `schedule.stage_deployment` set (say `run-stage/run-stage-k8s`), a pipeline or sweep
starts each stage as a run of that deployment instead of on its own machine, so on the Kubernetes
pool every stage is a pod of its own with the GPUs it needs (`schedule.stage_gpu_variable`), and a
sweep spreads over as many nodes as the cluster gives it (`tasks/fanout.py`).

The flow runs the stage's own task: the same cache key, lock, retries and verification as a stage
run in place (the store is shared by every pod). Its outcome (status and `StageResult`, a few KB) is
written to `<store>/_prefect/outcomes/<flow run id>.json`, where the flow run that started it reads
it back: the store is the one place both are sure to share.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.runtime import flow_run

from sparse2dense.store import write_json_atomic
from tasks.stages import StageRequest, outcome_path, run_in_place


@flow(name="run-stage", log_prints=True)
def run_stage(request: StageRequest, force: bool = False) -> dict[str, Any]:
    """Run (or reuse) one stage of a pipeline.

    Args:
        request: The stage's spec, store and MLflow parent run, as the pipeline made them.
        force: Recompute the stage even when cached.
    """
    outcome = run_in_place(request, request.spec.name, force)
    data = {"status": outcome.status, "result": outcome.result.model_dump(mode="json")}
    write_json_atomic(outcome_path(request.store, str(flow_run.get_id())), data)
    return data
