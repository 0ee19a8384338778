"""How a stage program is started, and the facts about the processes it runs in.

`stage_command` is the one place that turns a stage and its launcher settings into an argv: the
local launcher runs `python -m sparse2dense.stages.<program> SPEC.json` in one process; the
accelerate launcher runs the same module under `accelerate launch` (DDP, FSDP or DeepSpeed,
whatever its `config_file` says) on `num_processes` processes. Only the graph's training stages
are ever launched that way; data preparation, rollouts and evaluation always run as one local process.

`DeviceFacts` are the hardware facts that decide TRL's precision and device flags. They are read
from the running process by default and can be given explicitly, so a GPU preset's TRL configs can
be rendered (and checked) on a CPU machine.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sparse2dense.graph import current, is_training
from sparse2dense.placement import LauncherSection


def _accelerated(launcher: LauncherSection | None, stage: str | None) -> bool:
    if launcher is None or launcher.kind != "accelerate":
        return False
    return stage is None or is_training(stage)


def world_size_of(launcher: LauncherSection | None, stage: str | None = None) -> int:
    """How many processes run a stage under these launcher settings (1 unless it trains under accelerate)."""
    return launcher.num_processes if _accelerated(launcher, stage) else 1


def stage_command(
    stage: str, spec_path: str, launcher: LauncherSection | None = None, python: str | None = None
) -> list[str]:
    """The argv that runs one stage program (its graph entry names the program). Pure: reads
    nothing but its arguments and the graph. `launcher` None means local."""
    python = python or sys.executable
    module = f"sparse2dense.stages.{current().stage(stage).program}"
    if not _accelerated(launcher, stage):
        return [python, "-m", module, str(spec_path)]
    assert launcher is not None
    cmd = [python, "-m", "accelerate.commands.launch"]
    if launcher.config_file is not None:
        cmd += ["--config_file", str(launcher.config_file)]
    cmd += [
        "--num_processes",
        str(launcher.num_processes),
        "--num_machines",
        str(launcher.num_machines),
        "--machine_rank",
        str(launcher.machine_rank),
    ]
    if launcher.main_process_ip is not None:
        cmd += ["--main_process_ip", launcher.main_process_ip]
    if launcher.main_process_port is not None:
        cmd += ["--main_process_port", str(launcher.main_process_port)]
    return [*cmd, "-m", module, str(spec_path)]


def process_rank(env: Mapping[str, str] | None = None) -> int:
    """This process's global rank (0 when not launched by a distributed launcher)."""
    env = os.environ if env is None else env
    return int(env.get("RANK", "0"))


def process_world_size(env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    return int(env.get("WORLD_SIZE", "1"))


def is_main_process(env: Mapping[str, str] | None = None) -> bool:
    """True on the one process that writes a stage's files (rank 0, or the only process)."""
    return process_rank(env) == 0


@dataclass(frozen=True)
class DeviceFacts:
    """What the TRL configs need to know about the hardware a stage trains on."""

    cuda: bool
    bf16_supported: bool
    world_size: int = 1

    @classmethod
    def detect(cls) -> DeviceFacts:
        import torch

        cuda = torch.cuda.is_available()
        return cls(
            cuda=cuda,
            bf16_supported=cuda and torch.cuda.is_bf16_supported(),
            world_size=process_world_size(),
        )


def split_batch(
    global_batch: int, world_size: int, per_device: int | None, accumulation: int | None, what: str
) -> tuple[int, int]:
    """(per-device batch, gradient accumulation steps) that make `global_batch` per optimizer step.

    `global_batch = per_device * world_size * accumulation`; a plan that does not multiply out is
    refused with the numbers, so a memory plan can never silently change what is learned.
    """
    if per_device is None:
        accumulation = accumulation or 1
        per_device, rest = divmod(global_batch, world_size * accumulation)
        if rest or per_device == 0:
            raise ValueError(
                f"{what}: global batch {global_batch} does not split over {world_size} processes x "
                f"{accumulation} accumulation steps"
            )
        return per_device, accumulation
    if accumulation is None:
        accumulation, rest = divmod(global_batch, world_size * per_device)
        if rest or accumulation == 0:
            raise ValueError(
                f"{what}: global batch {global_batch} is not a multiple of {world_size} processes x "
                f"per-device batch {per_device}"
            )
        return per_device, accumulation
    if per_device * world_size * accumulation != global_batch:
        raise ValueError(
            f"{what}: per-device batch {per_device} x {world_size} processes x {accumulation} accumulation "
            f"steps = {per_device * world_size * accumulation}, not the global batch {global_batch}"
        )
    return per_device, accumulation


def batch_fields(global_batch: int, memory: Any, facts: DeviceFacts, what: str) -> dict[str, int]:
    """TRL's `per_device_train_batch_size` and `gradient_accumulation_steps` for a stage's global batch."""
    per_device, accumulation = split_batch(
        global_batch,
        facts.world_size,
        getattr(memory, "per_device_train_batch_size", None),
        getattr(memory, "gradient_accumulation_steps", None),
        what,
    )
    return {"per_device_train_batch_size": per_device, "gradient_accumulation_steps": accumulation}


def peak_memory_line(name: str) -> str | None:
    """`[name] peak GPU memory ...` for this process when it used CUDA, else None."""
    import torch

    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    peak = torch.cuda.max_memory_allocated() / 2**30
    reserved = torch.cuda.max_memory_reserved() / 2**30
    return f"[{name}] peak GPU memory {peak:.2f} GiB allocated, {reserved:.2f} GiB reserved (rank {process_rank()})"
