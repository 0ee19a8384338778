"""Where stages run, and how many at once: the launcher of the training stages and the schedule.

Neither is semantic: where a stage runs does not change its cache key (each stage's section fixes
its global batch, and the memory plan only splits it).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from sparse2dense.schema import Positive, Section


class LauncherSection(Section):
    """How the training stages (base, teacher_rl, warmup, opd, student_rl) are started.

    `local`: one process, `python -m sparse2dense.stages.<stage> SPEC.json`. `accelerate`: the same
    program under `accelerate launch` on `num_processes` processes in all (over `num_machines`
    machines; run the flow once per machine with its `machine_rank`), with DDP, FSDP or DeepSpeed
    as the accelerate `config_file` says (ready ones in infra/accelerate/). Data preparation, rollouts
    and evaluation always run as one local process. Not semantic: where a stage runs does not
    change the cache key (the global batch is fixed by each stage's section).
    """

    kind: Literal["local", "accelerate"] = "local"
    """local: one process; accelerate: `accelerate launch` as config_file says."""
    num_processes: Positive = 1
    """Training processes over all machines, e.g. one per GPU (kind accelerate)."""
    num_machines: Positive = 1
    """Machines taking part; the flow runs once on each (count)."""
    machine_rank: Annotated[int, Field(ge=0)] = 0
    """This machine's index, 0 to num_machines - 1 (0: the main one)."""
    main_process_ip: str | None = None
    """Address of machine_rank 0 (needed with several machines)."""
    main_process_port: Annotated[int, Field(gt=0, lt=65536)] | None = None
    """Port of the main process (1-65535; none: accelerate's default)."""
    config_file: str | None = None
    """accelerate config file: DDP, FSDP or DeepSpeed (ready ones in infra/accelerate/)."""

    @model_validator(mode="after")
    def _consistent(self) -> LauncherSection:
        if self.kind == "local" and (self.num_processes > 1 or self.num_machines > 1):
            raise ValueError("more than one process or machine needs kind: accelerate")
        if self.num_processes % self.num_machines:
            raise ValueError("num_processes (all machines together) must be a multiple of num_machines")
        if self.machine_rank >= self.num_machines:
            raise ValueError("machine_rank must be below num_machines")
        if self.num_machines > 1 and self.main_process_ip is None:
            raise ValueError("several machines need main_process_ip (the address of machine_rank 0)")
        return self


class ScheduleSection(Section):
    """How many stages run at once, and on which GPUs.

    A pipeline, or a sweep's runs all together, start every stage as soon as the stages it reads
    are done, up to `max_parallel` at a time: evaluations beside the next training stage, the arms
    of a sweep side by side. A stage takes the GPUs it needs (one per training process, or a vLLM
    engine's tensor-parallel size) from `gpus`, and waits while they are taken. With
    `stage_deployment`, each stage runs as a flow run of that deployment instead (a pod of its own
    on a Kubernetes pool, asking for its GPUs) and the pool places it.
    """

    max_parallel: Positive = 1
    """Stages running at the same time (1: one after another)."""
    gpus: list[Annotated[int, Field(ge=0)]] | None = None
    """GPU ids stages are placed on (none: CUDA_VISIBLE_DEVICES, else every GPU; none on a CPU machine)."""
    share_gpus: bool = False
    """Let stages share GPUs (off: a stage has its GPUs to itself while it runs)."""
    threads_per_stage: Positive | None = None
    """CPU threads of each stage process (none: torch's default alone, cores / max_parallel side by side)."""
    stage_deployment: str | None = None
    """Run each stage as a flow run of this `run-stage` deployment, e.g. run-stage/run-stage-k8s (none: here)."""
    stage_gpu_variable: str | None = None
    """Job variable of that deployment's pool that takes a stage's GPU count (gpus on infra/'s Kubernetes pool)."""
