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

On a cluster the same flow runs on the Kubernetes work pool (`infra/prefect.yaml`), with one
accelerate launch per training stage over the pod's GPUs; `s2d-stage` tag limits cap the stages
running at once over every flow run of the server.
"""

from __future__ import annotations

import os
import time
from typing import Any

from prefect import get_run_logger
from prefect.futures import PrefectFuture, as_completed

from sparse2dense.pipeline import PlannedStage, stage_inputs
from sparse2dense.placement import ScheduleSection
from sparse2dense.schedule import Job, Scheduler
from tasks.run_context import PipelineRun
from tasks.stages import StageOutcome, StageRequest, configured_task, unusable_hit


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


class _Running:
    def __init__(self, key: str, request: StageRequest, started: float, refreshed: bool = False) -> None:
        self.key, self.request, self.started, self.refreshed = key, request, started, refreshed


def fan_out(runs: list[PipelineRun], schedule: ScheduleSection) -> None:
    """Run every planned stage of `runs`, each distinct stage key once; results and failures are
    recorded in the runs (`PipelineRun.record` / `fail`). Returns when nothing more can run."""
    logger = get_run_logger()
    users: dict[str, list[tuple[PipelineRun, PlannedStage]]] = {}
    jobs: list[Job] = []
    for run in runs:
        for planned in run.plan:
            key = run.keys[planned.name]
            if key not in users:
                gpus = stage_inputs(run.cfg, planned.stage, planned.model).gpus()
                needs = frozenset(run.keys[name] for name in planned.upstream.values())
                jobs.append(Job(key=key, label=run.task_name(planned), needs=needs, gpus=gpus))
                users[key] = []
            users[key].append((run, planned))
    scheduler = Scheduler(jobs, schedule.max_parallel, gpu_ids(schedule), schedule.share_gpus)
    threads = threads_per_stage(schedule)
    jobs_by_key = {job.key: job for job in jobs}
    finished: dict[str, PrefectFuture[Any]] = {}
    running: dict[PrefectFuture[Any], _Running] = {}

    def submit(entry: _Running, force: bool) -> None:
        run, planned = users[entry.key][0]
        upstream = [finished[k] for k in jobs_by_key[entry.key].needs]
        task = configured_task(entry.request, run.task_name(planned), force)
        running[task.submit(entry.request, wait_for=upstream)] = entry

    while not scheduler.finished:
        for job, gpus in scheduler.startable():
            run, planned = users[job.key][0]
            request = run.request(planned).model_copy(
                update={"devices": gpus if scheduler.gpu_ids else None, "threads": threads}
            )
            forced = any(r.forced(p) for r, p in users[job.key])
            submit(_Running(job.key, request, time.monotonic()), forced)
        if not running:
            raise RuntimeError("no stage can start and none is running: the stage graph has a cycle")
        future = next(as_completed(list(running)))
        entry = running.pop(future)
        future.wait()  # sets the future's final state (without it, `state` asks the API, which may lag)
        state = future.state
        if state.is_completed() and not entry.refreshed and (problem := unusable_hit(entry.request, state)):
            logger.warning(
                "stage %s: cached result unusable (%s); recomputing", entry.request.spec.name, problem
            )
            submit(_Running(entry.key, entry.request, entry.started, refreshed=True), force=True)
            continue
        wall_s = time.monotonic() - entry.started
        if state.is_completed():
            status = "cached" if state.name == "Cached" else "computed"
            result = state.result()
            for i, (run, planned) in enumerate(users[entry.key]):
                run.record(
                    planned, StageOutcome(result=result, status=status if i == 0 else "cached", wall_s=wall_s)
                )
            finished[entry.key] = future
            scheduler.finish(entry.key, ok=True)
            continue
        why = f"stage {entry.request.spec.name} failed: {state.message or state.name}"
        logger.error(why)
        for run, planned in users[entry.key]:
            run.fail(planned, why)
        for blocked in scheduler.finish(entry.key, ok=False):
            for run, planned in users[blocked]:
                run.fail(planned, f"not run: {why}")
