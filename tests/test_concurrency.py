"""Two runs of one config started together compute each stage once (Prefect's serializable isolation
with a file lock per stage key), and a lock left behind by a SIGKILLed run does not block the next."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sparse2dense.config import load_config
from sparse2dense.pipeline import plan_keys
from tests.conftest import MICRO, ROOT, TOY


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("concurrent")


def _overrides(workdir: Path, extra: list[str]) -> list[str]:
    return [*MICRO, f"store_dir={workdir / 'store'}", f"runs_dir={workdir / 'runs'}", *extra]


def _launch(workdir: Path, name: str, extra: list[str] | None = None) -> subprocess.Popen:
    from prefect.settings import PREFECT_API_URL

    sets = [arg for item in _overrides(workdir, extra or []) for arg in ("--set", item)]
    env = os.environ | {"PREFECT_API_URL": PREFECT_API_URL.value(), "HF_HUB_OFFLINE": "1"}
    log = open(workdir / f"{name}.log", "w")  # noqa: SIM115  (closed with the process)
    return subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "run", str(TOY), *sets],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _summaries(workdir: Path) -> list[dict]:
    paths = sorted((workdir / "runs" / "flows").glob("*/summary.json"), key=lambda p: p.stat().st_mtime)
    return [json.loads(p.read_text()) for p in paths]


@pytest.fixture(scope="module")
def two_runs(prefect_server, workdir):
    procs = [_launch(workdir, f"run{i}") for i in range(2)]
    codes = [p.wait(timeout=1500) for p in procs]
    assert codes == [0, 0], [(workdir / f"run{i}.log").read_text()[-3000:] for i in range(2)]
    return _summaries(workdir)


def test_two_runs_at_once_compute_each_stage_once(two_runs, workdir):
    assert len(two_runs) == 2
    for name in two_runs[0]["stages"]:
        statuses = sorted(s["stages"][name]["status"] for s in two_runs)
        assert statuses == ["cached", "computed"], (name, statuses)
    # One stage process per stage: each stage log holds exactly one completion line.
    for log in (workdir / "store" / "_logs").rglob("*.log"):
        assert log.read_text().count('"wall_s"') == 1, log
    # One registered model: the second run finds the first one's version (the registry's lock).
    registered = [s["registered_model"] for s in two_runs]
    assert {r["uri"] for r in registered} == {registered[0]["uri"]}
    assert sorted(r["reused"] for r in registered) == [False, True]


# Slow (a third pipeline run, killed, then a fourth); the recovery of a dead holder's lock is
# tested without a pipeline in tests/test_services_abuse.py.
@pytest.mark.slow
def test_a_lock_left_by_a_killed_run_is_recovered(two_runs, workdir):
    extra = ["opd.steps=5"]
    cfg = load_config(TOY, _overrides(workdir, extra))
    lock = workdir / "store" / "_prefect" / "locks" / f"opd-{plan_keys(cfg)['opd']}.lock"
    victim = _launch(workdir, "killed", extra)
    deadline = time.monotonic() + 600
    while not lock.exists() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert lock.exists(), "the run never took the opd lock"
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    assert lock.exists()  # left behind: nobody released it

    survivor = _launch(workdir, "survivor", extra)
    assert survivor.wait(timeout=900) == 0, (workdir / "survivor.log").read_text()[-3000:]
    output = (workdir / "survivor.log").read_text()
    assert "which is gone; releasing it" in output
    latest = _summaries(workdir)[-1]
    assert latest["stages"]["opd"]["status"] == "computed"
    assert latest["stages"]["data_prep"]["status"] == "cached"
    assert not lock.exists()


def test_lock_manager_releases_a_lock_whose_process_died(tmp_path):
    from tasks.locking import StaleLockRecoveringManager

    code = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from tasks.locking import StaleLockRecoveringManager\n"
        "m = StaleLockRecoveringManager(lock_files_directory=Path(sys.argv[1]))\n"
        "assert m.acquire_lock('k', holder='victim')\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    dead = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT)
    assert dead.returncode == -signal.SIGKILL
    info = json.loads((tmp_path / "k.lock").read_text())
    assert info["holder"] == "victim" and info["pid"] > 0

    manager = StaleLockRecoveringManager(lock_files_directory=tmp_path)
    assert manager.acquire_lock("k", holder="me", acquire_timeout=5)
    assert manager.is_lock_holder("k", "me")
    other = StaleLockRecoveringManager(lock_files_directory=tmp_path)
    assert other.is_locked("k")  # held by a live process: still a lock
    manager.release_lock("k", "me")
    assert not other.is_locked("k")
