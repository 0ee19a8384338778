"""Symbolic equivalence (math-verify/sympy) in persistent worker processes with a hard wall-clock limit.

Threads cannot bound sympy: math-verify's signal.alarm timeouts raise off the main thread (TRL and
Prefect call rewards from threads), and sympy evaluating a huge integer power holds the GIL, so no
thread or asyncio deadline fires. Each answer goes to a worker process; one that overruns the limit
is SIGKILLed and replaced, and the answer gets `timeout`. Workers are fresh interpreters (spawn
semantics, never fork) started with subprocess rather than multiprocessing's spawn context, which
would re-import the caller's `__main__` in every worker (torch and TRL for `python -m
sparse2dense.stages.eval`; a crash for scripts without a main guard). They start lazily, results
are cached per pair, and the pool is safe to call from any number of threads.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import queue
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

DEFAULT_LIMIT_S = 5.0
DEFAULT_MEMORY_MB = 2048
STARTUP_TIMEOUT_S = 120.0
CACHE_SIZE = 65536

_PACKAGE_ROOT = str(Path(__file__).resolve().parents[1])


def default_workers() -> int:
    return min(4, os.cpu_count() or 1)


class _Worker:
    """One worker interpreter and its two pipes (multiprocessing.connection framing over raw fds)."""

    def __init__(self, memory_mb: int) -> None:
        to_child_r, to_child_w = os.pipe()
        to_parent_r, to_parent_w = os.pipe()
        env = dict(os.environ)
        # The worker must import this very copy of the package, whatever the parent's sys.path was.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_PACKAGE_ROOT, env.get("PYTHONPATH")]))
        try:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "sparse2dense.grader_worker",
                    str(to_child_r),
                    str(to_parent_w),
                    str(memory_mb),
                ],
                pass_fds=(to_child_r, to_parent_w),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                env=env,
            )
        finally:
            os.close(to_child_r)
            os.close(to_parent_w)
        self.requests = Connection(to_child_w, readable=False)
        self.replies = Connection(to_parent_r, writable=False)
        self.ready = False

    def wait_ready(self, timeout: float) -> bool:
        if not self.ready and self.replies.poll(timeout):
            try:
                self.ready = self.replies.recv()[0] == "ready"
            except (EOFError, OSError):
                return False
        return self.ready

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()  # SIGKILL: a worker inside a bignum never gets to a gentler signal
        self.process.wait(5)
        self.requests.close()
        self.replies.close()


@dataclass(frozen=True)
class Outcome:
    """A symbolic check's result: verdict is one of correct, wrong, timeout, error."""

    verdict: str
    reason: str


@dataclass
class PoolStats:
    calls: int = 0
    cache_hits: int = 0
    timeouts: int = 0
    errors: int = 0
    workers_started: int = 0
    workers_replaced: int = 0


class GraderPool:
    """A lazily started pool of symbolic-check workers with a per-answer wall-clock limit."""

    def __init__(
        self,
        workers: int | None = None,
        limit_s: float = DEFAULT_LIMIT_S,
        memory_mb: int = DEFAULT_MEMORY_MB,
        startup_timeout_s: float = STARTUP_TIMEOUT_S,
        cache_size: int = CACHE_SIZE,
    ) -> None:
        self.workers = workers or default_workers()
        self.limit_s = limit_s
        self.memory_mb = memory_mb
        self.startup_timeout_s = startup_timeout_s
        self.stats = PoolStats()
        self._idle: queue.SimpleQueue[_Worker | None] = queue.SimpleQueue()
        self._start_error = ""
        self._live: set[_Worker] = set()
        self._starting = 0
        self._launches: queue.SimpleQueue[bool] = queue.SimpleQueue()
        self._launcher: threading.Thread | None = None
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple[str, str], Outcome] = OrderedDict()
        self._cache_size = cache_size
        self._closed = False

    def check(self, gold: str, pred: str) -> Outcome:
        """Whether pred equals gold symbolically, decided within `limit_s` of a worker's time."""
        key = (gold, pred)
        with self._lock:
            self.stats.calls += 1
            if key in self._cache:
                self.stats.cache_hits += 1
                self._cache.move_to_end(key)
                return self._cache[key]
        outcome, cacheable = self._run(gold, pred)
        with self._lock:
            if outcome.verdict == "timeout":
                self.stats.timeouts += 1
            elif outcome.verdict == "error":
                self.stats.errors += 1
            # A dead or unstartable worker says nothing about the pair, so those are not remembered.
            if cacheable:
                self._cache[key] = outcome
                if len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return outcome

    def _run(self, gold: str, pred: str) -> tuple[Outcome, bool]:
        try:
            worker = self._checkout()
        except RuntimeError as err:
            return Outcome("error", str(err)), False
        start = time.monotonic()
        try:
            worker.requests.send((gold, pred))
            if not worker.replies.poll(self.limit_s):
                self._replace(worker)
                elapsed = time.monotonic() - start
                return Outcome("timeout", f"symbolic check killed after {elapsed:.1f}s"), True
            status, *reply = worker.replies.recv()
        except (EOFError, OSError):
            code = worker.process.poll()
            self._replace(worker)
            return Outcome("error", f"grader worker died (exit code {code})"), False
        self._idle.put(worker)
        if status == "ok":
            equal, reason = reply
            return Outcome("correct" if equal else "wrong", reason), True
        return Outcome("error", f"symbolic check failed: {reply[0]}"), True

    def _checkout(self) -> _Worker:
        """A ready idle worker, starting one first while the pool is under size.

        Only ready workers enter the idle queue, so the limit never includes a worker's start-up.
        """
        while True:
            with self._lock:
                if self._closed:
                    raise RuntimeError("grader pool is closed")
                if self._idle.empty() and len(self._live) + self._starting < self.workers:
                    self._start_worker()
            try:
                worker = self._idle.get(timeout=1.0)
            except queue.Empty:
                continue
            if worker is None:
                raise RuntimeError(f"grader worker failed to start: {self._start_error}")
            return worker

    def _start_worker(self) -> None:
        """Ask the launcher thread for one more worker (called under the lock)."""
        self._starting += 1
        if self._launcher is None:
            self._launcher = threading.Thread(
                target=self._launch_loop, daemon=True, name="s2d-grader-launcher"
            )
            self._launcher.start()
        self._launches.put(True)

    def _launch_loop(self) -> None:
        """Start workers from this one long-lived thread: the kernel's parent-death signal follows the
        thread that forked, so a worker started from a short-lived caller thread would die with it."""
        while self._launches.get():
            try:
                worker = _Worker(self.memory_mb)
            except OSError as err:
                with self._lock:
                    self._starting -= 1
                    self._start_error = f"{type(err).__name__}: {err}"
                self._idle.put(None)
                continue
            with self._lock:
                self._starting -= 1
                closed = self._closed
                if not closed:
                    self._live.add(worker)
                    self.stats.workers_started += 1
            if closed:
                worker.kill()
                return
            threading.Thread(target=self._admit, args=(worker,), daemon=True, name="s2d-grader-start").start()

    def _admit(self, worker: _Worker) -> None:
        if worker.wait_ready(self.startup_timeout_s):
            self._idle.put(worker)
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            worker.process.wait(1)  # a worker that crashed on start-up has an exit code to report
        code = worker.process.returncode
        worker.kill()
        with self._lock:
            self._live.discard(worker)
            self._start_error = "no ready signal" if code is None else f"exit code {code}"
        self._idle.put(None)  # wakes one waiting caller with an error instead of a hang

    def _replace(self, worker: _Worker) -> None:
        """Kill a stuck or dead worker and start its successor now, so it warms up before it is needed."""
        worker.kill()
        with self._lock:
            self._live.discard(worker)
            if self._closed:
                return
            self.stats.workers_replaced += 1
            self._start_worker()

    def warm(self) -> None:
        """Start every worker and wait until all are ready (the first answers then pay no start-up)."""
        held = []
        try:
            for _ in range(self.workers):
                held.append(self._checkout())
        finally:
            for worker in held:
                self._idle.put(worker)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            live, self._live = list(self._live), set()
        self._launches.put(False)
        for worker in live:
            with contextlib.suppress(OSError):
                worker.requests.send(None)
        for worker in live:
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.process.wait(0.5)  # a worker still busy in sympy is killed below
            worker.kill()


_pool: GraderPool | None = None
_pool_lock = threading.Lock()


def get_pool() -> GraderPool:
    """The process-wide pool, created on first use (sized by S2D_GRADER_WORKERS, S2D_GRADER_LIMIT_S)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            workers = int(os.environ.get("S2D_GRADER_WORKERS", 0)) or None
            limit_s = float(os.environ.get("S2D_GRADER_LIMIT_S", DEFAULT_LIMIT_S))
            _pool = GraderPool(workers=workers, limit_s=limit_s)
        return _pool


def configure(workers: int | None = None, limit_s: float = DEFAULT_LIMIT_S, **kwargs) -> GraderPool:
    """Replace the process-wide pool (closing the old one's workers) with one of these settings."""
    global _pool
    with _pool_lock:
        old, _pool = _pool, GraderPool(workers=workers, limit_s=limit_s, **kwargs)
    if old is not None:
        old.close()
    return _pool


def shutdown() -> None:
    global _pool
    with _pool_lock:
        old, _pool = _pool, None
    if old is not None:
        old.close()


atexit.register(shutdown)
