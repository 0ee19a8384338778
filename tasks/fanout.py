"""Fan-out: every distinct stage of a pipeline run, or of all the runs of a sweep together, starts
as soon as the stages it reads are done, up to the schedule's `max_parallel` at once.

Stages are submitted to the flow's own task runner (Prefect's `ThreadPoolTaskRunner`), each one the
stage's cached, retried, locked task (`tasks/stages.py`). A thread per running stage is all it takes:
the stage program is its own OS process (the stage contract), so the task only supervises it; a
`ProcessPoolTaskRunner` would add a second process per stage and pickle the Prefect context for
nothing, and task workers or deployment runs per stage would need a server and a worker pool even
for the embedded demo. What Prefect does not decide is *when* a stage may start: that is the pure
`sparse2dense.schedule.Scheduler` (upstream done, a free slot, free GPUs). Each running stage is
given its GPU ids (`CUDA_VISIBLE_DEVICES`) and, side by side on a CPU, its share of the cores.
Upstream futures are passed as `wait_for`, so the Prefect UI draws the stage graph.

Stages that several runs need (the same key) run once, for the first run that needs them; the others
record a cache hit, as the report counts them. A stage whose program fails (after its task's
retries) fails every run that needs it and blocks what depends on it; the rest go on.

On a cluster, `schedule.stage_deployment` names a deployment of the `run-stage` flow
(`flows/stage.py`; `run-stage-k8s` in `infra/prefect.yaml`): each stage is then submitted as a task
that starts a run of that deployment (Prefect's `run_deployment`, as a subflow) and waits for it, so
every stage is a job of its own on the work pool, with its GPU count as a job variable; the pool, not
this process, places it on a node. That task is retried like a local stage, and a retried stage
resumes from the checkpoints in the shared store. `s2d-stage` tag limits cap the stages running at
once over every flow run of the server.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from typing import Any

from prefect import get_run_logger, task
from prefect.deployments import run_deployment
from prefect.futures import PrefectFuture, as_completed

from sparse2dense.pipeline import PlannedStage, stage_inputs
from sparse2dense.placement import ScheduleSection
from sparse2dense.schedule import Job, Scheduler
from sparse2dense.store import StageResult
from tasks.run_context import PipelineRun
from tasks.stages import (
    StageFailed,
    StageOutcome,
    StageRequest,
    configured_task,
    outcome_of,
    outcome_path,
    task_retries,
    unusable_hit,
)


def gpu_ids(schedule: ScheduleSection) -> list[int]:
    """The GPUs stages are placed on: configured, else CUDA_VISIBLE_DEVICES, else every one torch sees."""
    if schedule.gpus is not None:
        return list(schedule.gpus)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [int(d) for d in visible.split(",") if d.strip().isdigit()]
    import torch

    return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []


def threads_per_stage(schedule: ScheduleSection) -> int | None:
    """CPU threads of each stage process: configured, else the cores shared out when stages run side by side."""
    if schedule.threads_per_stage is not None:
        return schedule.threads_per_stage
    if schedule.max_parallel == 1:
        return None
    return max(1, (os.cpu_count() or 1) // schedule.max_parallel)


@task(name="remote-stage", retry_delay_seconds=5)
def remote_stage(
    request: StageRequest, deployment: str, job_variables: dict[str, Any], force: bool = False
) -> StageOutcome:
    """Run one stage as a flow run of the `run-stage` deployment and wait for it."""
    started = time.monotonic()
    child = run_deployment(
        deployment,
        parameters={"request": request.model_dump(mode="json"), "force": force},
        job_variables=job_variables or None,
        timeout=None,
        poll_interval=2,
        as_subflow=True,
    )
    state = child.state
    if state is None or not state.is_completed():
        why = state.message if state is not None else "no state"
        raise StageFailed(
            f"stage {request.spec.name}: flow run {child.name} of {deployment} ended {state}: {why}"
        )
    outcome = json.loads(outcome_path(request.store, str(child.id)).read_text())
    result = StageResult.model_validate(outcome["result"])
    return StageOutcome(result=result, status=outcome["status"], wall_s=time.monotonic() - started)


class _Running:
    def __init__(self, key: str, request: StageRequest, started: float, refreshed: bool = False) -> None:
        self.key, self.request, self.started, self.refreshed = key, request, started, refreshed


class FanOut:
    """The distinct stages of some pipeline runs, their scheduler, and the stage tasks in flight."""

    def __init__(self, runs: list[PipelineRun], schedule: ScheduleSection) -> None:
        self.schedule = schedule
        self.users: dict[str, list[tuple[PipelineRun, PlannedStage]]] = {}  # key -> (run, its step)
        jobs: list[Job] = []
        for run in runs:
            for planned in run.plan:
                key = run.keys[planned.name]
                if key not in self.users:
                    gpus = stage_inputs(run.cfg, planned.stage, planned.model).gpus()
                    needs = frozenset(run.keys[name] for name in planned.upstream.values())
                    jobs.append(Job(key=key, label=run.task_name(planned), needs=needs, gpus=gpus))
                    self.users[key] = []
                self.users[key].append((run, planned))
        self.jobs = {job.key: job for job in jobs}
        # stages run as deployment runs are placed on GPUs by their work pool, not here
        local_gpus = gpu_ids(schedule) if schedule.stage_deployment is None else []
        self.scheduler = Scheduler(jobs, schedule.max_parallel, local_gpus, schedule.share_gpus)
        self.threads = threads_per_stage(schedule)
        self.finished: dict[str, PrefectFuture[Any]] = {}
        self.running: dict[PrefectFuture[Any], _Running] = {}

    def run(self) -> None:
        while not self.scheduler.finished:
            for job, gpus in self.scheduler.startable():
                run, planned = self.users[job.key][0]
                devices = gpus if self.scheduler.gpu_ids else None
                request = run.request(planned).model_copy(
                    update={"devices": devices, "threads": self.threads}
                )
                forced = any(r.forced(p) for r, p in self.users[job.key])
                self._submit(_Running(job.key, request, time.monotonic()), forced)
            if not self.running:
                raise RuntimeError("no stage can start and none is running: the stage graph has a cycle")
            future = next(as_completed(list(self.running)))
            self._settle(future, self.running.pop(future))

    def _submit(self, entry: _Running, force: bool) -> None:
        run, planned = self.users[entry.key][0]
        name = run.task_name(planned)
        upstream = [self.finished[k] for k in self.jobs[entry.key].needs]
        deployment, variable = self.schedule.stage_deployment, self.schedule.stage_gpu_variable
        if deployment is None:
            future = configured_task(entry.request, name, force).submit(
                entry.request, force, wait_for=upstream
            )
        else:
            gpus = self.jobs[entry.key].gpus
            variables = {variable: gpus} if variable and gpus else {}
            remote = remote_stage.with_options(task_run_name=name, retries=task_retries())
            future = remote.submit(entry.request, deployment, variables, force, wait_for=upstream)
        self.running[future] = entry

    def _settle(self, future: PrefectFuture[Any], entry: _Running) -> None:
        future.wait()  # sets the future's final state (without it, `state` asks the API, which may lag)
        state = future.state
        if state.is_completed() and not entry.refreshed and (problem := unusable_hit(entry.request, state)):
            get_run_logger().warning(
                "stage %s: cached result unusable (%s); recomputing", entry.request.spec.name, problem
            )
            self._submit(_Running(entry.key, entry.request, entry.started, refreshed=True), force=True)
            return
        if not state.is_completed():
            why = f"stage {entry.request.spec.name} failed: {state.message or state.name}"
            get_run_logger().error(why)
            for run, planned in self.users[entry.key]:
                run.fail(planned, why)
            for blocked in self.scheduler.finish(entry.key, ok=False):
                for run, planned in self.users[blocked]:
                    run.fail(planned, f"not run: {why}")
            return
        # a remote stage's task returns the outcome of the flow run that ran it
        remote = self.schedule.stage_deployment is not None
        outcome = state.result() if remote else outcome_of(state, entry.started)
        for i, (run, planned) in enumerate(self.users[entry.key]):
            # the first run that needs a stage computed it; the others reuse its result
            run.record(planned, outcome if i == 0 else replace(outcome, status="cached"))
        self.finished[entry.key] = future
        self.scheduler.finish(entry.key, ok=True)


def fan_out(runs: list[PipelineRun], schedule: ScheduleSection) -> None:
    """Run every planned stage of `runs`, each distinct stage key once; results and failures are
    recorded in the runs (`PipelineRun.record` / `fail`). Returns when nothing more can run."""
    FanOut(runs, schedule).run()
