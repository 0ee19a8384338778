"""`s2d up` / `s2d down`: a local Prefect server and MLflow UI, bound to 127.0.0.1; and the temporary
Prefect server a run starts when none is up.

Both are the projects' own servers (`prefect server start`, `mlflow server`) started as background
processes over the runs directory's stores: Prefect's database under `runs/prefect`, MLflow's
`runs/mlflow.db` and `runs/mlartifacts`, so runs made before `up` show as well. Their pids with
their start times, URLs and log files are kept in `runs/services.json`: `down` signals only the
processes `up` started, never one that got a recorded pid later. A server is started only on a free
port, and one that does not come up is stopped again. Prefect's API refuses state changes without a
CSRF token and cross-origin calls from any page but its own UI (`prefect_server_env`).
"""

from __future__ import annotations

import atexit
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from sparse2dense.config import ConfigError
from sparse2dense.processes import (
    ProcessRecord,
    command_line,
    process_is_alive,
    start_child,
    stop_group,
    stop_recorded_group,
)

HOST = "127.0.0.1"
SERVICES_FILE = "services.json"


class ServiceError(ConfigError):
    """A local server cannot be started as asked (port taken, exited during start-up); the message
    says why and what to do."""


def embedded_tracking_uri(runs_dir: Path) -> str:
    """MLflow's store when the config names no tracking server: a SQLite file in the runs directory."""
    return f"sqlite:///{runs_dir.resolve()}/mlflow.db"


def _bin(name: str) -> str:
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else name


def prefect_api_url(port: int) -> str:
    return f"http://{HOST}:{port}/api"


def is_healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def port_is_free(port: int) -> bool:
    """Whether a server could listen on HOST:`port` now (bound as the servers bind it)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def read_services(runs_dir: Path) -> dict:
    path = runs_dir / SERVICES_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def _record(info: dict) -> ProcessRecord:
    return ProcessRecord(pid=info["pid"], started=info.get("started"))


def running_prefect_api(runs_dir: Path) -> str | None:
    """The API URL of a Prefect server started by `s2d up` for this runs directory, if it answers."""
    prefect = read_services(runs_dir).get("prefect")
    if prefect and is_healthy(prefect["api_url"] + "/health"):
        return prefect["api_url"]
    return None


def prefect_server_env(runs_dir: Path, port: int) -> dict[str, str]:
    """The environment of a Prefect server on HOST:`port` over the runs directory's database.

    A browser may call the API cross-origin only from the server's own UI (under either name of the
    loopback address), and every state-changing call needs a CSRF token, which only a client that
    can read the API's answers (not another site's page) obtains. Settings the user exported win.
    """
    env = dict(os.environ)
    env.pop("PREFECT_API_URL", None)
    env |= {
        "PREFECT_HOME": str(runs_dir / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_API_URL": prefect_api_url(port),
    }
    env.setdefault("PREFECT_SERVER_CORS_ALLOWED_ORIGINS", f"http://{HOST}:{port},http://localhost:{port}")
    env.setdefault("PREFECT_SERVER_CSRF_PROTECTION_ENABLED", "true")
    return env


def _last_line(log_path: Path, offset: int) -> str:
    """The last non-empty line written to `log_path` past `offset` (what a server said before exiting)."""
    try:
        with open(log_path, "rb") as log:
            log.seek(offset)
            lines = [line.strip() for line in log.read().decode(errors="replace").splitlines()]
    except OSError:
        return ""
    return next((line for line in reversed(lines) if line), "")


def _start_server(
    name: str, cmd: list[str], health_url: str, log_path: Path, env: dict[str, str], timeout_s: float, **kw
) -> subprocess.Popen:
    """Start a server in a session of its own and wait until `health_url` answers; a server that exits
    or does not answer in `timeout_s` is stopped and reported as a ServiceError."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    offset = log_path.stat().st_size if log_path.exists() else 0
    with open(log_path, "ab") as log:
        proc = start_child(
            cmd, new_session=True, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=log_path.parent, **kw
        )
    try:
        deadline = time.monotonic() + timeout_s
        while not is_healthy(health_url):
            if proc.poll() is not None:
                said = _last_line(log_path, offset)
                raise ServiceError(
                    f"{name} server exited during start-up (code {proc.returncode})"
                    + (f": {said}" if said else "")
                    + f"; log: {log_path}"
                )
            if time.monotonic() > deadline:
                raise ServiceError(
                    f"{name} server not answering at {health_url} after {timeout_s:.0f}s; log: {log_path}"
                )
            time.sleep(0.5)
    except BaseException:
        stop_group(proc)
        raise
    return proc


def _prefect_command(port: int, ui: bool = True) -> list[str]:
    cmd = [_bin("prefect"), "server", "start", "--host", HOST, "--port", str(port)]
    return cmd if ui else [*cmd, "--no-ui"]


def _mlflow_command(runs_dir: Path, port: int) -> list[str]:
    return [
        _bin("mlflow"), "server", "--host", HOST, "--port", str(port),
        "--backend-store-uri", embedded_tracking_uri(runs_dir),
        "--default-artifact-root", (runs_dir / "mlartifacts").as_uri(),
    ]  # fmt: skip


def _still_up(name: str, info: dict | None, health_url: str | None) -> bool:
    """Whether a recorded server is the process `up` started and answers; a recorded server that runs
    but does not answer is an error (stop it with `s2d down` first)."""
    if not info or not _record(info).is_running():
        return False
    if health_url is None or is_healthy(health_url):
        return True
    raise ServiceError(
        f"the {name} server `s2d up` started (pid {info['pid']}) runs but does not answer at {health_url}; "
        f"stop it with `s2d down`, see {info.get('log')}"
    )


def up(runs_dir: Path, prefect_port: int = 4200, mlflow_port: int = 5000, timeout_s: float = 180) -> dict:
    """Start what is not already running of the Prefect server and MLflow UI; returns their records.
    Fails (ServiceError) before starting anything when a port it needs is taken, and stops what it
    started when a server does not come up, so it never leaves a server it has not recorded."""
    runs_dir = runs_dir.resolve()
    runs_dir.mkdir(parents=True, exist_ok=True)
    services = read_services(runs_dir)
    recorded = services.get("prefect")
    prefect_up = _still_up("Prefect", recorded, recorded and recorded["api_url"] + "/health")
    recorded = services.get("mlflow")
    mlflow_up = _still_up("MLflow", recorded, recorded and recorded["ui_url"] + "/health")
    wanted = {"prefect": (prefect_port, "--prefect-port")} if not prefect_up else {}
    if not mlflow_up:
        wanted["mlflow"] = (mlflow_port, "--mlflow-port")
    for port, option in wanted.values():
        if not port_is_free(port):
            raise ServiceError(f"port {port} on {HOST} is in use; free it or pick another with {option}")
    started: list[subprocess.Popen] = []
    try:
        if "prefect" in wanted:
            api = prefect_api_url(prefect_port)
            log = runs_dir / "logs" / "prefect-server.log"
            env = prefect_server_env(runs_dir, prefect_port)
            cmd = _prefect_command(prefect_port)
            proc = _start_server("Prefect", cmd, api + "/health", log, env, timeout_s, die_with_parent=False)
            started.append(proc)
            ui = f"http://{HOST}:{prefect_port}"
            services["prefect"] = _service(proc, log) | {"api_url": api, "ui_url": ui}
        if "mlflow" in wanted:
            url = f"http://{HOST}:{mlflow_port}"
            log = runs_dir / "logs" / "mlflow-server.log"
            # like Prefect's analytics: a local UI does not phone home
            env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true")
            cmd = _mlflow_command(runs_dir, mlflow_port)
            proc = _start_server("MLflow", cmd, url + "/health", log, env, timeout_s, die_with_parent=False)
            started.append(proc)
            services["mlflow"] = _service(proc, log) | {"ui_url": url}
    except BaseException:
        for proc in started:
            stop_group(proc)
        raise
    (runs_dir / SERVICES_FILE).write_text(json.dumps(services, indent=2))
    return services


def _service(proc: subprocess.Popen, log: Path) -> dict:
    record = ProcessRecord.of(proc.pid)
    return record.model_dump() | {"command": command_line(proc.pid), "log": str(log)}


def down(runs_dir: Path, timeout_s: float = 30) -> dict[str, str]:
    """Stop what `up` started (each server's whole process group); returns what became of each
    recorded server: "stopped", "not running", or why it was left alone (its pid is another
    process's now, or the record cannot tell)."""
    runs_dir = runs_dir.resolve()
    outcome = {}
    for name, info in read_services(runs_dir).items():
        record, pid = _record(info), info["pid"]
        if not process_is_alive(pid):
            outcome[name] = "not running"
        elif record.started is None:
            outcome[name] = (
                f"not stopped: the record of pid {pid} has no start time to tell it from a later process "
                f"with that pid (now: {command_line(pid)}); stop it yourself if it is the server"
            )
        elif record.is_replaced():
            outcome[name] = f"not stopped: pid {pid} is another process now ({command_line(pid)})"
        else:
            stop_recorded_group(record, timeout_s)
            outcome[name] = "stopped"
    (runs_dir / SERVICES_FILE).unlink(missing_ok=True)
    return outcome


class TemporaryPrefect:
    """A Prefect server for one command, on a free port over the runs directory's database, in its own
    session: a terminal's Ctrl-C reaches the flow, which records the interrupt through this server,
    and not the server. It is stopped when the command exits and, should the command be killed, by
    the kernel (`start_child`)."""

    def __init__(self, runs_dir: Path, timeout_s: float = 180) -> None:
        runs_dir = runs_dir.resolve()
        port = free_port()
        self.api_url = prefect_api_url(port)
        log = runs_dir / "logs" / "prefect-temporary-server.log"
        cmd = _prefect_command(port, ui=False)
        env = prefect_server_env(runs_dir, port)
        self.proc = _start_server("temporary Prefect", cmd, self.api_url + "/health", log, env, timeout_s)
        # Registered before Prefect is imported: exit handlers run last-registered first, so Prefect's
        # own (flushing logs and events to this server) run before the server stops.
        atexit.register(self.stop)

    def stop(self) -> None:
        if self.proc.returncode is None:  # once: a reaped server's pid may be another process's
            stop_group(self.proc, grace_s=10)
