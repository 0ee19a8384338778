"""Local servers and process lifetimes under abuse: a web page calling the Prefect API, a taken port,
a stale `services.json`, Ctrl-C of a run, a flow SIGKILLed in the middle of a stage.

Units run against fake or temporary servers in seconds. The pipeline tests (marked slow) start
`s2d run` on the micro toy world in a session of its own, as a terminal would, and interrupt it the
way a terminal's Ctrl-C does: SIGINT to the whole foreground process group. The `s2d up` test is
marked ui (`make test-ui`): it starts the real Prefect and MLflow servers.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

from flows.cli import main
from tests.conftest import MICRO, ROOT, TOY
from tests.observe import processes_running

EVIL = "http://evil.example"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _processes_under(path: Path) -> list[psutil.Process]:
    """Processes whose command line or working directory lies under `path` (what a run started there)."""
    found = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            mine = str(path) in " ".join(proc.cmdline()) or proc.cwd().startswith(str(path))
            if mine and proc.pid != os.getpid() and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
    return found


def _start_ticks(pid: int) -> int:
    """When `pid` started (clock ticks since boot): field 22 of /proc/<pid>/stat."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # our own child, once it has exited
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _kill_processes_under(path: Path) -> None:
    for proc in _processes_under(path):
        with contextlib.suppress(psutil.Error):
            proc.kill()


def _wait_gone(pids: list[int], timeout_s: float) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while (alive := [p for p in pids if _alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive


def _request(url: str, method: str = "GET", headers: dict | None = None, body: bytes | None = None):
    request = urllib.request.Request(url, method=method, headers=headers or {}, data=body)
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


def _listening_addresses(pid: int) -> set[str]:
    """The addresses the process group led by `pid` listens on."""
    addresses = set()
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if os.getpgid(proc.pid) == pid:
                addresses |= {
                    c.laddr.ip for c in proc.net_connections("inet") if c.status == psutil.CONN_LISTEN
                }
    return addresses


def _assert_refuses_other_origins(api: str) -> None:
    """What a page on another site (or in the browser of the user) can and cannot do with the API."""
    port = api.split(":")[2].split("/")[0]
    # a "simple" cross-origin POST, sent by a browser without asking: refused
    status, _, _ = _request(
        f"{api}/flows/filter", "POST", {"Origin": EVIL, "Content-Type": "text/plain"}, b"{}"
    )
    assert status == 403
    status, _, _ = _request(
        f"{api}/flows/filter", "POST", {"Origin": EVIL, "Content-Type": "application/json"}, b"{}"
    )
    assert status == 403
    # the pre-flight a page needs before sending the CSRF header: not granted to another origin ...
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "prefect-csrf-token",
    }
    _, headers, _ = _request(f"{api}/flows/filter", "OPTIONS", {"Origin": EVIL, **preflight})
    assert headers.get("access-control-allow-origin") is None
    _, headers, _ = _request(f"{api}/csrf-token?client=x", "GET", {"Origin": EVIL})
    assert headers.get("access-control-allow-origin") in (None, "")  # the token cannot be read
    # ... but granted to the server's own UI
    own = f"http://127.0.0.1:{port}"
    _, headers, _ = _request(f"{api}/flows/filter", "OPTIONS", {"Origin": own, **preflight})
    assert headers.get("access-control-allow-origin") == own


# ---- records that survive pid reuse, and the lock that names the stage program ----------------------


def test_a_process_record_does_not_match_a_later_process_with_its_pid():
    from sparse2dense.processes import ProcessRecord

    me = ProcessRecord.of(os.getpid())
    assert me.started == _start_ticks(os.getpid()) and me.is_running() and not me.is_replaced()
    other = ProcessRecord(pid=os.getpid(), started=me.started + 1)  # an earlier process with this pid
    assert not other.is_running() and other.is_replaced()


def test_a_lock_is_held_while_its_stage_program_runs_though_its_flow_is_gone(tmp_path):
    from tasks.locking import StaleLockRecoveringManager

    dead_flow = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    stage = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        info = {
            "holder": "killed-flow",
            "expiration": None,
            "host": socket.gethostname(),
            "pid": int(dead_flow.stdout),
            "stage": {"pid": stage.pid, "started": _start_ticks(stage.pid)},
        }
        (tmp_path / "k.lock").write_text(json.dumps(info))
        manager = StaleLockRecoveringManager(lock_files_directory=tmp_path)
        assert manager.is_locked("k")  # the stage program may still be writing its directory
        assert not manager.acquire_lock("k", holder="rerun", acquire_timeout=1)
    finally:
        stage.kill()
        stage.wait()
    assert not manager.is_locked("k")
    assert manager.acquire_lock("k", holder="rerun", acquire_timeout=5)


def test_the_lock_holder_names_its_stage_program_and_nobody_else_can(tmp_path):
    from tasks.locking import StaleLockRecoveringManager

    manager = StaleLockRecoveringManager(lock_files_directory=tmp_path)
    assert manager.acquire_lock("k", holder="me")
    manager.record_stage_process("k", os.getppid())
    info = json.loads((tmp_path / "k.lock").read_text())
    assert info["pid"] == os.getpid() and info["started"] == _start_ticks(os.getpid())
    assert info["stage"] == {"pid": os.getppid(), "started": _start_ticks(os.getppid())}

    foreign = {"holder": "other", "expiration": None, "host": "elsewhere", "pid": 1}
    (tmp_path / "f.lock").write_text(json.dumps(foreign))
    manager.record_stage_process("f", os.getpid())  # not our lock: left as it is
    assert json.loads((tmp_path / "f.lock").read_text()) == foreign


# ---- child process groups ----------------------------------------------------------------------------

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]
# a child that starts a grandchild in its group and prints both pids
PARENT_OF_ONE = [
    sys.executable,
    "-c",
    "import os, subprocess, sys, time\n"
    f"g = subprocess.Popen({SLEEPER!r})\n"
    "print(os.getpid(), g.pid, flush=True)\n"
    "time.sleep(120)\n",
]


def test_a_child_dies_when_the_thread_that_started_it_is_killed(tmp_path):
    """A flow SIGKILLed while its stage task (a thread) waits on the stage program: the program gets
    SIGTERM from the kernel instead of running on as an orphan."""
    script = (
        "import sys, threading, time\n"
        "from sparse2dense.processes import ChildGroups\n"
        "groups = ChildGroups()\n"
        "def run():\n"
        f"    with groups.start({SLEEPER!r}) as proc:\n"
        "        print(proc.pid, flush=True)\n"
        "        proc.wait()\n"
        "threading.Thread(target=run).start()\n"
        "time.sleep(120)\n"
    )
    flow = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    stage_pid = int(flow.stdout.readline())
    assert _alive(stage_pid)
    assert os.getpgid(stage_pid) == stage_pid  # its own group: a terminal's Ctrl-C does not reach it
    flow.kill()
    flow.wait()
    assert _wait_gone([stage_pid], 5) == [], "the stage program outlived its flow"


def test_stopping_the_children_stops_their_own_children_and_starts_no_more():
    from sparse2dense.processes import ChildGroups

    groups = ChildGroups()
    with groups.start(PARENT_OF_ONE, stdout=subprocess.PIPE, text=True) as proc:
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert groups.stop_all(grace_s=5) == 1
        assert _wait_gone(pids, 5) == []
        assert groups.was_stopped(proc)
    with pytest.raises(KeyboardInterrupt), groups.start(SLEEPER):
        pass


# ---- s2d up / s2d down -------------------------------------------------------------------------------


def _s2d_up(
    runs: Path, prefect_port: int, mlflow_port: int, timeout: float = 30
) -> subprocess.CompletedProcess:
    args = [
        "up",
        "--runs-dir",
        str(runs),
        "--prefect-port",
        str(prefect_port),
        "--mlflow-port",
        str(mlflow_port),
    ]
    env = dict(os.environ)
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"s2d up still waiting after {timeout}s:\n{out}\n{err}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.parametrize("taken", ["prefect", "mlflow"])
def test_up_on_a_taken_port_fails_at_once_and_starts_nothing(tmp_path, taken):
    runs = tmp_path / "runs"
    ports = {"prefect": _free_port(), "mlflow": _free_port()}
    try:
        with socket.socket() as squatter:
            squatter.bind(("127.0.0.1", ports[taken]))
            squatter.listen()
            started = time.monotonic()
            result = _s2d_up(runs, ports["prefect"], ports["mlflow"])
            took = time.monotonic() - started
        assert result.returncode == 2, result
        assert result.stderr.strip() == (
            f"error: port {ports[taken]} on 127.0.0.1 is in use; free it or pick another with --{taken}-port"
        )
        assert "Traceback" not in result.stderr
        assert took < 15
        assert _processes_under(tmp_path) == []  # no server left behind, recorded or not
        assert not (runs / "services.json").exists()
    finally:
        _kill_processes_under(tmp_path)


def test_up_stops_the_server_it_started_when_the_next_one_fails(tmp_path, monkeypatch):
    """A server that exits during start-up (not a taken port: something only it knows) ends `up` with
    its last words, and what `up` started before it is stopped, not left unrecorded."""
    from sparse2dense import services

    site = tmp_path / "site"
    (site / "api").mkdir(parents=True)
    (site / "api" / "health").write_text("true")
    fake_prefect = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory", str(site)]
    fake_mlflow = [sys.executable, "-c", "import sys; print('cannot open the database'); sys.exit(3)"]
    monkeypatch.setattr(services, "_prefect_command", lambda port, ui=True: [*fake_prefect, str(port)])
    monkeypatch.setattr(services, "_mlflow_command", lambda runs_dir, port: fake_mlflow)
    prefect_port = _free_port()
    try:
        with pytest.raises(
            services.ServiceError, match=r"MLflow server exited during start-up \(code 3\): cannot open"
        ):
            services.up(tmp_path / "runs", prefect_port, _free_port(), timeout_s=30)
        assert services.port_is_free(prefect_port)
        assert _processes_under(tmp_path) == []
        assert not (tmp_path / "runs" / "services.json").exists()
    finally:
        _kill_processes_under(tmp_path)


def test_down_leaves_alone_a_process_that_has_a_recorded_pid_now(tmp_path, capsys):
    """A stale services.json (the servers are gone, their pids reused): `down` signals nobody."""
    runs = tmp_path / "runs"
    runs.mkdir()
    bystander = subprocess.Popen(SLEEPER, start_new_session=True)
    try:
        started = _start_ticks(bystander.pid)
        services = {
            "prefect": {"pid": bystander.pid, "started": started - 5, "api_url": "http://127.0.0.1:1/api"},
            "mlflow": {"pid": bystander.pid, "ui_url": "http://127.0.0.1:2"},  # a record without a start time
        }
        (runs / "services.json").write_text(json.dumps(services))
        assert main(["down", "--runs-dir", str(runs)]) == 0
        time.sleep(0.5)
        assert bystander.poll() is None, "down signalled a process that only shares a recorded pid"
        out = capsys.readouterr().out
        assert f"prefect: not stopped: pid {bystander.pid} is another process now" in out
        assert "mlflow: not stopped: the record of pid" in out
        assert not (runs / "services.json").exists()
    finally:
        bystander.kill()
        bystander.wait()


def test_the_temporary_server_listens_on_loopback_and_refuses_other_origins(tmp_path):
    """The server a run starts when none is up: 127.0.0.1 only; a web page's cross-origin request is
    refused, while Prefect's own client (which fetches a CSRF token) works as before."""
    from sparse2dense.services import TemporaryPrefect

    server = TemporaryPrefect(tmp_path / "runs")
    try:
        assert _listening_addresses(server.proc.pid) == {"127.0.0.1"}
        _assert_refuses_other_origins(server.api_url)
        from prefect.client.orchestration import SyncPrefectClient

        with SyncPrefectClient(server.api_url) as client:
            flow_id = client.create_flow_from_name("made-by-a-client")
            assert client.read_flow(flow_id).name == "made-by-a-client"
    finally:
        server.stop()
    assert not _alive(server.proc.pid)


@pytest.mark.ui
def test_up_servers_listen_on_loopback_refuse_other_origins_and_stop(tmp_path):
    runs = tmp_path / "runs"
    prefect_port, mlflow_port = _free_port(), _free_port()
    try:
        result = _s2d_up(runs, prefect_port, mlflow_port, timeout=300)
        assert result.returncode == 0, result
        services = json.loads((runs / "services.json").read_text())
        for name in ("prefect", "mlflow"):
            assert _listening_addresses(services[name]["pid"]) == {"127.0.0.1"}, name
        _assert_refuses_other_origins(services["prefect"]["api_url"])
        mlflow = f"http://127.0.0.1:{mlflow_port}/api/2.0/mlflow/experiments/search"
        status, _, _ = _request(mlflow, "POST", {"Origin": EVIL, "Content-Type": "application/json"}, b"{}")
        assert status == 403
        assert main(["down", "--runs-dir", str(runs)]) == 0
        assert _wait_gone([services[n]["pid"] for n in services], 10) == []
        assert _processes_under(tmp_path) == []
    finally:
        _kill_processes_under(tmp_path)


# ---- the pipeline: Ctrl-C, and a flow killed in the middle of a stage --------------------------------

# The micro world without teacher RL and warmup; opd long enough, checkpointing often enough, to be
# interrupted between checkpoints.
LEAN = [
    "teacher_rl.enabled=false",
    "warmup.enabled=false",
    "base.teacher_steps=10",
    "base.student_steps=10",
    "opd.steps=40",
    "opd.checkpoint_every=2",
]


def _launch(workdir: Path, api: str | None, log: str) -> subprocess.Popen:
    """`s2d run` as a terminal starts it: the leader of its own process group."""
    sets = [f"store_dir={workdir / 'store'}", f"runs_dir={workdir / 'runs'}", *MICRO, *LEAN]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env.pop("PREFECT_API_URL", None)
    if api:
        env["PREFECT_API_URL"] = api
    return subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "run", str(TOY), *[a for s in sets for a in ("--set", s)]],
        cwd=ROOT,
        env=env,
        stdout=open(workdir / f"{log}.out", "w"),  # noqa: SIM115  (closed with the process)
        stderr=open(workdir / f"{log}.err", "w"),  # noqa: SIM115
        start_new_session=True,
    )


def _wait_for(predicate, proc: subprocess.Popen, what: str, timeout_s: float = 900) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert proc.poll() is None, f"the run ended before {what}"
        assert time.monotonic() < deadline, f"no {what} after {timeout_s}s"
        time.sleep(0.1)


def _latest_summary(workdir: Path) -> dict:
    paths = sorted((workdir / "runs" / "flows").glob("*/summary.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(paths[-1].read_text())


@pytest.fixture
def prefect_api(request):
    """No server (the run starts a temporary one), or one that outlives the run (as `s2d up`'s does)."""
    if request.param == "temporary":
        return None
    request.getfixturevalue("prefect_server")
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()


@pytest.mark.slow
@pytest.mark.parametrize("prefect_api", ["temporary", "outliving"], indirect=True)
def test_ctrl_c_stops_the_run_records_it_and_the_rerun_resumes(tmp_path, prefect_api):
    run = _launch(tmp_path, prefect_api, "interrupted")
    try:
        opd = tmp_path / "store" / "opd"
        _wait_for(
            lambda: any(opd.glob("*/checkpoints/checkpoint-2/trainer_state.json")), run, "opd checkpoint"
        )
        opd_dir = next(opd.glob("*/checkpoints/checkpoint-2")).parents[1]
        assert processes_running("sparse2dense.stages.opd", opd_dir)

        os.killpg(run.pid, signal.SIGINT)  # Ctrl-C in the terminal
        started = time.monotonic()
        code = run.wait(timeout=120)
        took = time.monotonic() - started
        print(f"exit {code} {took:.1f}s after SIGINT")
        stderr = (tmp_path / "interrupted.err").read_text()
        assert code == 130, stderr[-3000:]
        assert took < 15
        assert "Traceback" not in stderr, stderr[-3000:]
        assert "interrupted: run the same command to resume" in stderr
        with pytest.raises(ProcessLookupError):
            os.killpg(run.pid, 0)  # nothing of its group is left
        assert _processes_under(tmp_path) == []  # nor its stage programs and temporary server
        assert (opd_dir / "checkpoints" / "checkpoint-2").is_dir()  # kept for the rerun

        summary = _latest_summary(tmp_path)
        assert summary["status"] == "failed" and "interrupted" in summary["errors"]
        state = _flow_run_state(tmp_path, prefect_api, summary["flow_run_id"])
        assert state == ("CRASHED", "Execution was aborted by an interrupt signal."), state
    finally:
        _kill_processes_under(tmp_path)

    rerun = _launch(tmp_path, prefect_api, "rerun")
    try:
        assert rerun.wait(timeout=1500) == 0, (tmp_path / "rerun.err").read_text()[-3000:]
    finally:
        _kill_processes_under(tmp_path)
    stages = _latest_summary(tmp_path)["stages"]
    assert {stages[name]["status"] for name in ("data_prep", "base/teacher", "base/student")} == {"cached"}
    assert stages["opd"]["status"] == "computed" and stages["opd"]["resumed_from_step"] >= 2


def _flow_run_state(workdir: Path, api: str | None, flow_run_id: str) -> tuple[str, str]:
    """The flow run's final state type and message, from its server, or from the database of the
    temporary server (gone with its run)."""
    if api:
        from prefect.client.orchestration import SyncPrefectClient

        with SyncPrefectClient(api) as client:
            state = client.read_flow_run(flow_run_id).state
        return state.type.value, state.message
    with contextlib.closing(sqlite3.connect(workdir / "runs" / "prefect" / "prefect.db")) as db:
        return db.execute(
            "SELECT f.state_type, s.message FROM flow_run f JOIN flow_run_state s ON s.id = f.state_id "
            "WHERE f.id = ?",
            (flow_run_id,),
        ).fetchone()


@pytest.mark.slow
def test_a_flow_killed_mid_stage_takes_its_stage_programs_and_server_with_it(tmp_path):
    run = _launch(tmp_path, None, "killed")
    try:
        store = tmp_path / "store"
        _wait_for(lambda: processes_running("sparse2dense.stages.base", store), run, "base stage")
        stages = processes_running("sparse2dense.stages.base", store)
        os.kill(run.pid, signal.SIGKILL)  # the flow process alone: an OOM kill, a preempted node
        run.wait()
        assert _wait_gone(stages, 5) == [], "stage programs outlived their flow"
        deadline = time.monotonic() + 15
        while _processes_under(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _processes_under(tmp_path) == []  # the temporary server too
    finally:
        _kill_processes_under(tmp_path)
