"""MLflow bookkeeping: one parent run per flow run, one child run per computed stage.

Everything goes through `MlflowClient` with an explicit tracking URI (never a process-global
active run), so concurrent tasks cannot log into each other's runs. Params are logged once, when the
child run is created; keys that look like credentials are never logged.
"""

from __future__ import annotations

import fcntl
import json
import random
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunStatus
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from sqlalchemy.exc import SQLAlchemyError

from sparse2dense.sample_preview import MLFLOW_TABLE, SAMPLES_FILE, load_samples, table_columns

SECRET_RE = re.compile(r"(token|secret|password|api_key|credential)", re.I)


@contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Take turns with other processes on a SQLite store (a file lock beside the database); a
    server store serializes for itself, so nothing is locked."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    lock_path = Path(uri.removeprefix("sqlite:///") + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def connect(uri: str) -> MlflowClient:
    """A client whose store is ready. The first use of a SQLite store creates and migrates its schema;
    two processes doing that at once break each other's migrations, so they take turns."""
    with store_lock(uri):
        client = MlflowClient(uri)
        if uri.startswith("sqlite:///"):
            client.search_experiments(max_results=1)
    return client


def ensure_experiment(client: MlflowClient, name: str, artifact_root: Path, attempts: int = 5) -> str:
    """The experiment's id, creating it if needed; safe when several runs start at once (the store's
    first use and the creation can race between processes, so a failed attempt is retried)."""
    for attempt in range(attempts):
        try:
            existing = client.get_experiment_by_name(name)
            if existing is not None:
                return existing.experiment_id
            return client.create_experiment(name, artifact_location=artifact_root.resolve().as_uri())
        except (MlflowException, SQLAlchemyError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 + random.random())
    raise AssertionError("unreachable")


def flatten_params(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if SECRET_RE.search(key):
            continue
        if isinstance(value, dict) and value:
            out |= flatten_params(value, f"{name}.")
        else:
            out[name] = json.dumps(value, default=str)[:500]
    return out


def start_parent_run(client: MlflowClient, experiment_id: str, name: str, tags: dict[str, str]) -> str:
    return client.create_run(experiment_id, run_name=name, tags=tags).info.run_id


def start_child_run(
    client: MlflowClient,
    experiment_id: str,
    parent_run_id: str,
    name: str,
    params: dict[str, Any],
    tags: dict,
) -> str:
    run = client.create_run(experiment_id, run_name=name, tags={"mlflow.parentRunId": parent_run_id, **tags})
    log_params(client, run.info.run_id, flatten_params(params))
    return run.info.run_id


def log_params(client: MlflowClient, run_id: str, params: dict[str, str]) -> None:
    """In batches (one request, one transaction each) of MLflow's limit of 100 params."""
    items = [Param(key, value) for key, value in params.items()]
    for start in range(0, len(items), 100):
        client.log_batch(run_id, params=items[start : start + 100])


def log_metrics(client: MlflowClient, run_id: str, metrics: dict[str, float]) -> None:
    """At step 0, in batches of MLflow's limit of 1000 metrics."""
    now = int(time.time() * 1000)
    items = [Metric(re.sub(r"[^\w\-./ ]", "_", key), float(value), now, 0) for key, value in metrics.items()]
    for start in range(0, len(items), 1000):
        client.log_batch(run_id, metrics=items[start : start + 1000])


def log_stage_files(client: MlflowClient, run_id: str, out_dir: Path) -> None:
    """The manifest, result summaries and per-sample records; never model weights. An eval's first
    graded samples also become an MLflow table (the UI's artifact view shows it as one)."""
    for name in ("manifest.json", "results.json", SAMPLES_FILE):
        if (out_dir / name).is_file():
            client.log_artifact(run_id, str(out_dir / name))
    if (out_dir / "records").is_dir():
        client.log_artifacts(run_id, str(out_dir / "records"), artifact_path="records")
    if samples := load_samples(out_dir):
        client.log_table(run_id, data=table_columns(samples), artifact_file=MLFLOW_TABLE)


def end_run(client: MlflowClient, run_id: str, ok: bool) -> None:
    status = RunStatus.FINISHED if ok else RunStatus.FAILED
    client.set_terminated(run_id, RunStatus.to_string(status))
