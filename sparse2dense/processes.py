"""Child processes that do not outlive the process that started them, and records of a process that
survive pid reuse.

A pid is reused once its process is gone, so a pid alone cannot tell a stale record (a server of a
previous boot, a lock left by a killed run) from an unrelated process that now has the number. A
`ProcessRecord` also keeps the process's start time (clock ticks since boot, from /proc/<pid>/stat)
and matches only the process whose pid and start time both agree. `start_child` makes a child the
leader of its own process group (a terminal's Ctrl-C then reaches only the process that supervises
it, and stopping the group stops the child's own children) and, on Linux, has the kernel send it
SIGTERM when its parent dies (PR_SET_PDEATHSIG), so a SIGKILLed parent leaves nothing running.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

_PR_SET_PDEATHSIG = 1
try:  # resolved here: the forked child, before exec, only makes the call
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux: a parent's death is noticed only by its pipes closing
    _prctl = None


def start_ticks(pid: int) -> int | None:
    """When `pid` started, in clock ticks since boot (None where /proc cannot say: not Linux, or gone)."""
    try:
        # field 22 of /proc/<pid>/stat; fields are counted after the parenthesised command name
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def command_line(pid: int) -> str:
    """The command `pid` runs, for messages ('' when it cannot be read)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def process_is_alive(pid: int) -> bool:
    """True while `pid` runs; a zombie (killed, not yet reaped by its parent) counts as gone, and
    one that is our own child is reaped here."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


class ProcessRecord(BaseModel):
    """One process, named so that a later process given the same pid does not match."""

    model_config = ConfigDict(frozen=True)

    pid: int
    started: int | None = None  # start_ticks(pid); None: not known (a record without it matches by pid)

    @classmethod
    def of(cls, pid: int) -> ProcessRecord:
        return cls(pid=pid, started=start_ticks(pid))

    def is_running(self) -> bool:
        """The recorded process itself still runs (not merely some process with its pid)."""
        if not process_is_alive(self.pid):
            return False
        return self.started is None or start_ticks(self.pid) == self.started

    def is_replaced(self) -> bool:
        """Its pid now belongs to another process."""
        return self.started is not None and process_is_alive(self.pid) and not self.is_running()


def _die_with_parent(parent: int) -> None:
    """Runs in the child between fork and exec: SIGTERM when the thread that started it exits (the
    setting survives exec), and no start at all if that parent is already gone."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:
        os._exit(1)


def start_child(
    cmd: Sequence[str], new_session: bool = False, die_with_parent: bool = True, **popen: Any
) -> subprocess.Popen:
    """Start `cmd` as the leader of a new process group (or session: no controlling terminal either)
    that gets SIGTERM when the thread that started it ends (unless `die_with_parent` is off: a
    server meant to outlive the command)."""
    parent = os.getpid()
    group = {"start_new_session": True} if new_session else {"process_group": 0}
    if die_with_parent:
        popen["preexec_fn"] = lambda: _die_with_parent(parent)
    return subprocess.Popen(cmd, **group, **popen)


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def stop_group(proc: subprocess.Popen, grace_s: float = 5.0) -> None:
    """SIGTERM the child's process group, wait up to `grace_s` for the child, SIGKILL what is left."""
    _signal_group(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace_s)
    _signal_group(proc.pid, signal.SIGKILL)
    proc.wait()


def stop_recorded_group(record: ProcessRecord, grace_s: float = 30.0) -> None:
    """`stop_group` for a group leader that is not our child (known by its record). Signals only the
    recorded process's group: a pid now used by another process is left alone."""
    if not record.is_running():
        return
    _signal_group(record.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while record.is_running() and time.monotonic() < deadline:
        time.sleep(0.2)
    if record.is_running() or start_ticks(record.pid) is None:  # still there, or gone: its group's rest
        _signal_group(record.pid, signal.SIGKILL)


class ChildGroups:
    """The child process groups one process supervises (a flow's stage programs). `stop_all` stops
    them together when the process is interrupted; after it, nothing more is started."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: set[subprocess.Popen] = set()
        self._stopped: set[int] = set()
        self.closed = False

    @contextlib.contextmanager
    def start(self, cmd: Sequence[str], **popen: Any) -> Iterator[subprocess.Popen]:
        """Start `cmd` (`start_child`); on leaving, its whole group is stopped, whether the child ended,
        or the caller is leaving early."""
        with self._lock:
            if self.closed:
                raise ChildrenStopped("not started: this process is stopping its children")
            proc = start_child(cmd, **popen)
            self._running.add(proc)
        try:
            yield proc
        finally:
            stop_group(proc)
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
            with self._lock:
                self._running.discard(proc)

    def was_stopped(self, proc: subprocess.Popen) -> bool:
        """`proc` ended because `stop_all` stopped it."""
        return proc.pid in self._stopped

    def stop_all(self, grace_s: float = 5.0) -> int:
        """Stop every running group (SIGTERM, then SIGKILL after `grace_s`); returns how many."""
        with self._lock:
            self.closed = True
            procs = list(self._running)
            self._stopped |= {p.pid for p in procs}
        for proc in procs:
            _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            _signal_group(proc.pid, signal.SIGKILL)
        return len(procs)


class ChildrenStopped(KeyboardInterrupt):
    """A child was not started, or ended, because its supervisor was interrupted. A KeyboardInterrupt,
    so that callers that retry on errors (Prefect's task retries) do not start it again."""
