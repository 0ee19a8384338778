"""Which stages may start now: the dependency and resource bookkeeping of a fan-out.

The flows hand every distinct stage of a pipeline, or of all the runs of a sweep, to a `Scheduler`
as a `Job` (its cache key, the keys it reads, the GPUs it needs). `startable()` gives the jobs whose
upstream jobs are done, as long as fewer than `max_parallel` run and their GPUs are free, and
reserves those GPUs: first the jobs with the longest chain of stages waiting on them (the critical
path: teacher RL before the evaluations beside it), then in plan order; `finish()` records the outcome. A failed job blocks what depends on
it, transitively; everything else goes on. Pure bookkeeping, no threads: the flow runs the jobs on
Prefect's task runner and reports back (a few dozen lines that no scheduling library offers in this
shape: Prefect resolves futures but neither caps by GPUs nor skips the dependants of a failure).

On a machine without GPUs (`gpu_ids` empty) GPU needs are ignored; with GPUs, a job needing more
than there are is refused before anything starts, and `share_gpus` lets jobs overlap on them.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Job:
    key: str
    label: str
    needs: frozenset[str] = frozenset()  # keys of the jobs it reads
    gpus: int = 0


def chain_below(jobs: list[Job]) -> dict[str, int]:
    """Per job, the length of the longest chain of jobs that need it, directly or not."""
    dependants: dict[str, list[str]] = {j.key: [] for j in jobs}
    for job in jobs:
        for need in job.needs:
            dependants[need].append(job.key)
    depth: dict[str, int] = {}

    def below(key: str) -> int:
        if key not in depth:
            depth[key] = max((1 + below(d) for d in dependants[key]), default=0)
        return depth[key]

    for job in jobs:
        below(job.key)
    return depth


@dataclass
class Scheduler:
    jobs: list[Job]
    max_parallel: int = 1
    gpu_ids: list[int] = field(default_factory=list)
    share_gpus: bool = False
    done: set[str] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)
    blocked: set[str] = field(default_factory=set)  # never run: an upstream failed
    running: dict[str, list[int]] = field(default_factory=dict)  # key -> GPUs it holds

    def __post_init__(self) -> None:
        keys = [j.key for j in self.jobs]
        if len(set(keys)) != len(keys):
            raise ValueError("a job key appears twice; jobs must be distinct stages")
        unknown = {n for j in self.jobs for n in j.needs} - set(keys)
        if unknown:
            raise ValueError(f"jobs need keys that are not jobs: {sorted(unknown)}")
        if self.max_parallel < 1:
            raise ValueError("max_parallel must be at least 1")
        too_big = [j.label for j in self.jobs if j.gpus > len(self.gpu_ids)]
        if self.gpu_ids and not self.share_gpus and too_big:
            raise ValueError(f"{too_big} need more GPUs than the {len(self.gpu_ids)} available")
        self._free = list(self.gpu_ids)
        self._turn = 0  # round-robin start for shared GPUs
        depth = chain_below(self.jobs)
        self._by_priority = sorted(self.jobs, key=lambda j: -depth[j.key])  # stable: plan order next

    @property
    def finished(self) -> bool:
        settled = self.done | self.failed | self.blocked
        return not self.running and all(j.key in settled for j in self.jobs)

    def _ready(self, job: Job) -> bool:
        settled = self.done | self.failed | self.blocked
        return job.key not in settled and job.key not in self.running and job.needs <= self.done

    def _take_gpus(self, job: Job) -> list[int] | None:
        if not self.gpu_ids or job.gpus == 0:
            return []
        if self.share_gpus:
            n = min(job.gpus, len(self.gpu_ids))
            start, self._turn = self._turn, (self._turn + n) % len(self.gpu_ids)
            return [self.gpu_ids[(start + i) % len(self.gpu_ids)] for i in range(n)]
        if len(self._free) < job.gpus:
            return None
        taken, self._free = self._free[: job.gpus], self._free[job.gpus :]
        return taken

    def startable(self) -> list[tuple[Job, list[int]]]:
        """Jobs to start now, each with the GPU ids reserved for it, critical path first."""
        out = []
        for job in self._by_priority:
            if len(self.running) >= self.max_parallel:
                break
            if not self._ready(job):
                continue
            gpus = self._take_gpus(job)
            if gpus is None:
                continue  # a later, smaller job may still fit
            self.running[job.key] = gpus
            out.append((job, gpus))
        return out

    def finish(self, key: str, ok: bool) -> list[str]:
        """Record a running job's outcome; returns the keys it blocks (when it failed)."""
        gpus = self.running.pop(key)
        if not self.share_gpus:
            self._free = sorted(self._free + gpus)
        if ok:
            self.done.add(key)
            return []
        self.failed.add(key)
        newly: list[str] = []
        changed = True
        while changed:
            changed = False
            for job in self.jobs:
                dead = self.failed | self.blocked
                if job.key not in dead and job.key not in self.done and job.needs & dead:
                    self.blocked.add(job.key)
                    newly.append(job.key)
                    changed = True
        return newly
