"""Watching a flow from a test: the stage processes running now, a stage killed from outside, and
the task runs of a finished flow run (with their start and end times)."""

import asyncio
import os
import signal
import threading
import time
from pathlib import Path


def processes_running(module: str, under: Path) -> list[int]:
    """Pids of the processes running `python -m <module>` with an argument under `under`."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            args = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if module in args and any(str(under) in a for a in args):
            found.append(int(proc.name))
    return found


class KillAtCheckpoint(threading.Thread):
    """SIGKILLs the first process of `stage` (any key under `store`) once it has saved the
    checkpoint `step`; records which stage directory it killed and at which step."""

    def __init__(self, store: Path, stage: str, step: int, timeout_s: float = 900) -> None:
        super().__init__(daemon=True)
        self.store, self.stage, self.step, self.timeout_s = store, stage, step, timeout_s
        self.killed: Path | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        while not self.stop.is_set() and time.monotonic() < deadline:
            for state in (self.store / self.stage).glob(
                f"*/checkpoints/checkpoint-{self.step}/trainer_state.json"
            ):
                stage_dir = state.parents[2]
                for pid in processes_running(f"sparse2dense.stages.{self.stage}", stage_dir):
                    os.kill(pid, signal.SIGKILL)
                    self.killed = stage_dir
                if self.killed:
                    return
            time.sleep(0.1)


def finished_task_runs(flow_run_id: str, timeout_s: float = 60) -> list:
    """The task runs of a finished flow run. Task run states reach the server as events, processed
    asynchronously: wait until every task run shows its final state."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async def fetch():
        async with get_client() as client:
            return await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )

    deadline = time.monotonic() + timeout_s
    while True:
        runs = asyncio.run(fetch())
        if all(t.state and t.state.is_final() for t in runs) or time.monotonic() > deadline:
            return runs
        time.sleep(1)


def most_at_once(task_runs: list) -> int:
    """The largest number of the given task runs that were running at the same moment."""
    edges = []
    for t in task_runs:
        if t.start_time and t.end_time:
            edges += [(t.start_time, 1), (t.end_time, -1)]
    running = peak = 0
    for _, step in sorted(edges, key=lambda e: (e[0], e[1])):
        running += step
        peak = max(peak, running)
    return peak
