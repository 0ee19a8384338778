"""One Prefect task per stage: an explicit cache key, persisted results, retries, serialized locks.

The cache key is the stage key (stage, version, semantic config, upstream manifest digests, seed),
never Prefect's TASK_SOURCE or RUN_ID. Cache lookups are serialized per key by a file lock (two runs
that need the same stage compute it once; a lock left by a killed process is recovered). A cache hit
is trusted only when the stage directory's manifest still verifies and its upstream digests match;
otherwise the task is re-run with `refresh_cache` and a warning. The task
body launches the stage program as a subprocess (fresh process: GPU memory freed, crashes isolated),
streams its output to the Prefect log, and mirrors metrics and records into the stage's MLflow run.
A failed stage is retried `S2D_TASK_RETRIES` times (default 1); a retry, like a rerun of the flow,
resumes the stage from its checkpoints or finished shards. There is one task per stage of the graph
(`stage_task`), tagged `s2d-stage`; `tasks/fanout.py` submits them.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact
from prefect.cache_policies import CachePolicy
from prefect.filesystems import LocalFileSystem
from prefect.results import ResultStore
from prefect.transactions import IsolationLevel
from pydantic import BaseModel, ConfigDict

from sparse2dense.launch import stage_command
from sparse2dense.processes import ChildGroups, ChildrenStopped
from sparse2dense.progress import Progress, parse_progress
from sparse2dense.sample_preview import load_samples, render_markdown
from sparse2dense.spec import StageSpec, result_problem
from sparse2dense.store import MANIFEST, StageResult, result_from_dir, stage_dir, verify_stage_dir
from tasks import tracking
from tasks.locking import StaleLockRecoveringManager


class Tracking(BaseModel):
    model_config = ConfigDict(frozen=True)

    tracking_uri: str
    experiment_id: str
    parent_run_id: str


class StageRequest(BaseModel):
    """Everything a stage task needs; small and serializable, so Prefect can record it. `devices`
    and `threads` say where the program runs (GPU ids, CPU threads); they are not in its spec."""

    model_config = ConfigDict(frozen=True)

    spec: StageSpec
    store: str
    tracking: Tracking
    devices: list[int] | None = None  # None: the environment's; []: no GPU
    threads: int | None = None  # None: torch's default


def task_retries() -> int:
    """Retries of a failed stage task: `S2D_TASK_RETRIES`, default 1."""
    return int(os.environ.get("S2D_TASK_RETRIES", "1"))


class StageFailed(RuntimeError):
    """A stage program exited non-zero; the message carries the end of its output."""


@dataclass
class StageKeyPolicy(CachePolicy):
    """Cache on the stage key alone (see module docstring)."""

    def compute_key(self, task_ctx, inputs: dict[str, Any], flow_parameters, **kwargs) -> str | None:
        return record_key(inputs["request"])


def record_key(request: StageRequest) -> str:
    """The stage's Prefect cache key: the name of its result record and of its lock."""
    return f"{request.spec.stage}-{request.spec.key}"


def results_dir(store: str | Path) -> Path:
    """Where Prefect persists the stage tasks' result records of a store."""
    return Path(store) / "_prefect" / "results"


def lock_manager(store: str | Path) -> StaleLockRecoveringManager:
    """The stage-key locks of a store, shared by every flow that uses it."""
    return StaleLockRecoveringManager(lock_files_directory=Path(store) / "_prefect" / "locks")


def _env(request: StageRequest, run_id: str) -> dict[str, str]:
    env = dict(os.environ)
    env |= {
        "MLFLOW_TRACKING_URI": request.tracking.tracking_uri,
        "MLFLOW_EXPERIMENT_ID": request.tracking.experiment_id,
        "MLFLOW_RUN_ID": run_id,
        "TOKENIZERS_PARALLELISM": "false",
        "TQDM_MININTERVAL": "10",
        "PYTHONUNBUFFERED": "1",
    }
    # Would copy every checkpoint into the artifact store.
    env.pop("HF_MLFLOW_LOG_ARTIFACTS", None)
    if request.devices is not None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, request.devices))
    if request.threads is not None:
        env |= {"OMP_NUM_THREADS": str(request.threads), "MKL_NUM_THREADS": str(request.threads)}
    return env


class ProgressArtifact:
    """The task run's Prefect progress artifact, fed from the stage program's progress lines."""

    def __init__(self, name: str, every_s: float = 5.0) -> None:
        self.every_s, self.last = every_s, 0.0
        self.id = create_progress_artifact(0.0, description=f"{name}: starting")

    def update(self, progress: Progress, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.last >= self.every_s:
            self.last = now
            update_progress_artifact(self.id, progress.percent, description=progress.describe())


# The stage programs this process runs, each the leader of its own process group: Ctrl-C in a
# terminal reaches the flow alone, which stops them (`stop_stages`) and records the interrupt, and a
# program (with what it started, e.g. accelerate's workers) gets SIGTERM when its flow dies.
STAGE_PROCESSES = ChildGroups()


def stop_stages() -> int:
    """Stop every stage program this process runs, and start no more; returns how many were running."""
    return STAGE_PROCESSES.stop_all()


def _run_program(request: StageRequest, run_id: str, log_path: Path) -> None:
    spec = request.spec
    out_dir = Path(spec.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    spec_path = out_dir / "spec.json"
    spec_path.write_text(spec.model_dump_json(indent=2))
    logger = get_run_logger()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    tail: deque[str] = deque(maxlen=40)
    cmd = stage_command(spec.stage, str(spec_path), spec.inputs.launcher)
    artifact, latest = ProgressArtifact(spec.name), None
    locks = lock_manager(request.store)
    with (
        open(log_path, "a") as log,
        STAGE_PROCESSES.start(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(request, run_id)
        ) as proc,
    ):
        # the stage key stays locked while this program runs, even should this process die first
        locks.record_stage_process(record_key(request), proc.pid)
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            # tqdm redraws with carriage returns: keep the latest state of the line
            text = line.rstrip("\n").split("\r")[-1].strip()
            if text:
                tail.append(text)
                logger.info("[%s] %s", spec.name, text)
            if progress := parse_progress(text):
                latest = progress
                artifact.update(progress)
        code = proc.wait()
    if STAGE_PROCESSES.was_stopped(proc):
        raise ChildrenStopped(f"stage {spec.name} stopped: its flow run was interrupted")
    if latest is not None:
        artifact.update(latest, force=True)
    if code != 0:
        raise StageFailed(f"stage {spec.name} exited with {code}; log: {log_path}\n" + "\n".join(tail))


PREFECT_SAMPLES = 3  # per benchmark, in an eval task run's samples artifact


def samples_artifact_key(name: str) -> str:
    """The Prefect artifact key of a step's samples (`eval/teacher_base` -> `eval-teacher-base-samples`):
    keys take lowercase letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") + "-samples"


def publish_samples(name: str, out_dir: Path) -> None:
    """An eval's first graded samples as a markdown artifact of its task run, so the Prefect UI shows
    what the model writes beside the score; nothing for a stage that wrote none."""
    if samples := load_samples(out_dir):
        create_markdown_artifact(
            render_markdown(samples, per_benchmark=PREFECT_SAMPLES),
            key=samples_artifact_key(name),
            description=f"{name}: first graded samples per benchmark",
        )


def _execute(request: StageRequest, recompute: bool = False) -> StageResult:
    spec = request.spec
    if recompute and (Path(spec.output_dir) / MANIFEST).is_file():
        # a finished directory would be taken as done by the program: `--force` means compute again
        get_run_logger().info("stage %s: recomputing on request; its finished result is discarded", spec.name)
        (Path(spec.output_dir) / MANIFEST).unlink()
    client = MlflowClient(request.tracking.tracking_uri)
    run_id = tracking.start_child_run(
        client,
        request.tracking.experiment_id,
        request.tracking.parent_run_id,
        spec.name,
        params=spec.config,
        tags={"s2d.stage": str(spec.stage), "s2d.key": spec.key},
    )
    out_dir = Path(spec.output_dir)
    log_path = Path(request.store) / "_logs" / str(spec.stage) / f"{spec.key}.log"
    try:
        _run_program(request, run_id, log_path)
        if problem := verify_stage_dir(out_dir):
            raise StageFailed(f"stage {spec.name} finished without a valid result: {problem}")
        result = result_from_dir(out_dir, spec.name, mlflow_run_id=run_id)
        tracking.log_metrics(client, run_id, {f"stage/{k}": v for k, v in result.metrics.items()})
        tracking.log_stage_files(client, run_id, out_dir)
        publish_samples(spec.name, out_dir)
    except BaseException:
        tracking.end_run(client, run_id, ok=False)
        raise
    tracking.end_run(client, run_id, ok=True)
    return result


def _make_task(stage: str):
    def body(request: StageRequest, recompute: bool = False) -> StageResult:
        return _execute(request, recompute)

    body.__name__ = f"run_{stage}"
    return task(
        body,
        name=stage,
        cache_policy=StageKeyPolicy(),
        persist_result=True,
        retries=1,
        retry_delay_seconds=5,
        tags=[STAGE_TAG],
    )


# Every stage task carries this tag: `prefect concurrency-limit create s2d-stage N` caps the stages
# running at once over every flow run of a Prefect server (the schedule's max_parallel caps one run).
STAGE_TAG = "s2d-stage"


@functools.cache
def stage_task(stage: str):
    """The Prefect task of one graph stage (made on first use)."""
    return _make_task(stage)


@dataclass
class StageOutcome:
    result: StageResult
    status: str  # "computed" | "cached"
    wall_s: float


def restore_result_record(request: StageRequest, name: str) -> None:
    """Write the stage's Prefect result record back when it is missing or unreadable while the stage
    directory still verifies. Prefect treats such a record as a miss and would run the task, whose
    program would then only find its finished directory: the stage would be reported computed (with
    an empty MLflow run) although its files were reused. Restored, the lookup is the cache hit it is."""
    spec = request.spec
    results = results_dir(request.store)
    key = record_key(request)
    record = ResultStore(result_storage=LocalFileSystem(basepath=str(results)))
    if record.exists(key):
        return
    out_dir = stage_dir(Path(request.store), str(spec.stage), spec.key)
    if result_problem(spec, out_dir) is not None:
        return  # nothing to reuse: the task computes the stage
    path = results / key
    if path.exists():
        get_run_logger().warning(
            "stage %s: unreadable Prefect result record %s; rewritten from its verified directory %s",
            name,
            path,
            out_dir,
        )
    record.write(result_from_dir(out_dir, spec.name), key=key)


def configured_task(request: StageRequest, name: str, force: bool = False):
    """The stage's task for this request: its key's lock and result storage under the store,
    `S2D_TASK_RETRIES` retries, `force` skipping the cache lookup. Unless forced, a result record
    lost while its stage directory verifies is restored first (`restore_result_record`)."""
    store = Path(request.store)
    if not force:
        restore_result_record(request, name)
    return stage_task(request.spec.stage).with_options(
        task_run_name=name,
        retries=task_retries(),
        result_storage=results_dir(store),
        refresh_cache=force,
        cache_policy=StageKeyPolicy().configure(
            isolation_level=IsolationLevel.SERIALIZABLE,
            lock_manager=lock_manager(store),
        ),
    )


def unusable_hit(request: StageRequest, state: Any) -> str | None:
    """Why a cache hit cannot be trusted (its directory no longer verifies), or None."""
    spec = request.spec
    if state.name != "Cached":
        return None
    return result_problem(spec, stage_dir(Path(request.store), str(spec.stage), spec.key))


def run_in_place(request: StageRequest, name: str, force: bool = False) -> StageOutcome:
    """Run (or reuse) one stage here and wait: its task, and again with `refresh_cache` when a cache
    hit's directory no longer verifies (the `run-stage` flow's body)."""
    started = time.monotonic()
    state = configured_task(request, name, force)(request, force, return_state=True)
    if problem := unusable_hit(request, state):
        get_run_logger().warning("stage %s: cached result unusable (%s); recomputing", name, problem)
        state = configured_task(request, name, force=True)(request, return_state=True)
    return outcome_of(state, started)


def outcome_of(state: Any, started: float) -> StageOutcome:
    """A finished stage task's result, whether it was computed or a cache hit, and its time since `started`."""
    status = "cached" if state.name == "Cached" else "computed"
    return StageOutcome(result=state.result(), status=status, wall_s=time.monotonic() - started)


def outcome_path(store: str | Path, flow_run_id: str) -> Path:
    """Where a `run-stage` flow run leaves its outcome for the flow run that started it."""
    return Path(store) / "_prefect" / "outcomes" / f"{flow_run_id}.json"
