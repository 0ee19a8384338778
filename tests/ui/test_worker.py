"""The cluster path on one machine: a local Prefect server (`s2d up`), the process work pool and the
deployments of `infra/prefect.yaml` (`prefect deploy`), a `prefect worker`, and a toy run of the
`post-train` deployment picked up and completed by that worker, each of its stages started as a run
of the `run-stage` deployment (`schedule.stage_deployment`) that the same worker picks up, two at once."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sparse2dense.config import load_config
from sparse2dense.services import down, up
from tests.conftest import MICRO, ROOT, TOY

pytestmark = pytest.mark.ui

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _prefect(args: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(
        [str(BIN / "prefect"), "--no-prompt", *args], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_a_process_worker_runs_the_toy_deployment_from_prefect_yaml(tmp_path):
    runs = tmp_path / "runs"
    services = up(runs, prefect_port=_free_port(), mlflow_port=_free_port())
    api = services["prefect"]["api_url"]
    env = os.environ | {
        "PREFECT_API_URL": api,
        "PREFECT_HOME": str(tmp_path / "prefect-client"),
        "S2D_APP_DIR": str(ROOT),
        "HF_HUB_OFFLINE": "1",
    }
    worker = None
    try:
        _prefect(["work-pool", "create", "s2d-process", "--type", "process"], env)
        for name in ("post-train", "run-stage"):
            _prefect(["deploy", "--prefect-file", "infra/prefect.yaml", "--name", name], env)
        worker_log = open(tmp_path / "worker.log", "w")  # noqa: SIM115  (closed with the process)
        worker = subprocess.Popen(
            [str(BIN / "prefect"), "worker", "start", "--pool", "s2d-process", "--limit", "3"],
            cwd=tmp_path,
            env=env,
            stdout=worker_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        paths = [f"store_dir={tmp_path / 'store'}", f"runs_dir={runs}"]
        stages_elsewhere = ["schedule.max_parallel=2", "schedule.stage_deployment=run-stage/run-stage"]
        cfg = load_config(TOY, [*MICRO, *paths, *stages_elsewhere])
        params = json.dumps({"config": cfg.model_dump(mode="json")})
        out = _prefect(["deployment", "run", "post-train/post-train", "--params", params], env)
        flow_run_id = next(line.split()[-1] for line in out.splitlines() if "UUID" in line)

        from prefect.client.orchestration import get_client
        from prefect.settings import PREFECT_API_URL, temporary_settings

        deadline = time.monotonic() + 1200
        with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
            while time.monotonic() < deadline:
                run = client.read_flow_run(flow_run_id)
                if run.state and run.state.is_final():
                    break
                time.sleep(3)
        log = (tmp_path / "worker.log").read_text()
        assert run.state.is_completed(), f"{run.state}\n{log[-4000:]}"
        assert run.work_pool_name == "s2d-process"
        summary = json.loads((runs / "flows" / flow_run_id / "summary.json").read_text())
        assert summary["status"] == "completed"
        assert {e["status"] for e in summary["stages"].values()} == {"computed"}
        with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
            stage_runs = [r for r in client.read_flow_runs() if r.deployment_id and r.id != run.id]
        # one run-stage flow run per stage, each a subflow of the post-train run, done by the worker
        assert len(stage_runs) == len(summary["stages"])
        assert all(r.state.is_completed() and r.work_pool_name == "s2d-process" for r in stage_runs)
        assert {r.parent_task_run_id is not None for r in stage_runs} == {True}
    finally:
        if worker is not None:
            _stop(worker)
        down(runs)


def _stop(proc: subprocess.Popen, grace_s: float = 30) -> None:
    """SIGTERM the worker's process group; what has not exited after the grace period is killed."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
