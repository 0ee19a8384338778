"""Resuming inside a stage, and the fault-injection switch that tests it.

Training stages (base, teacher_rl/student_rl, warmup, opd) save a trainer checkpoint every
`checkpoint_every` steps into `<stage dir>/checkpoints/` and, when relaunched, resume from the newest
*complete* one (`checkpoint_problem`: a readable `trainer_state.json` of its step, weights whose
headers load, whole optimizer, scheduler and RNG states): global step, optimizer and scheduler
state, RNG states and data order continue where they stopped. A newer damaged one (a save cut off by
a full disk, a kill or a power loss) is named in the stage log and removed; training rewrites it.
Generation stages (teacher_rollouts, eval) write their samples in shards of `batch_size` prompts
(`checkpoints/shards/<part>/00003.jsonl`, each written atomically and sampled with seed + shard
index) and skip the shards that already exist.
Either way a resumed stage produces the same result as an uninterrupted one (same files, same
metrics, same manifest digest); `run_stage` removes `checkpoints/` once the result is final and
records `resumed_from_step` in the manifest (the checkpoint's step, or the number of finished shards).

Fault injection, for tests and for checking a setup:

    S2D_FAIL_AT=TARGET:STEP[:MODE][,TARGET:STEP[:MODE]...]

TARGET is a stage name (`opd`, `eval/student_final`, `base/teacher`) or a stage kind (`eval`,
`base`, `teacher_rl`, ...). STEP is a training step (optimizer step, `global_step`) for training
stages, and the number of shards written for generation stages. MODE is `raise` (default: the
stage raises `InjectedFault` and exits non-zero), `kill` (the stage SIGKILLs itself) or `torn` (on a
checkpoint step: the stage raises halfway through writing that checkpoint's `trainer_state.json`,
leaving what a full disk or a power loss during the save leaves; elsewhere as `raise`). A training
stage dies right after step STEP, after that step's checkpoint when STEP is a checkpoint step; a
generation stage dies right after its STEP-th shard is written. Each stage directory fails at most
once (a marker file in `checkpoints/`), so a Prefect retry or a rerun resumes and finishes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open
from transformers import TrainerCallback

from sparse2dense.progress import ProgressCallback
from sparse2dense.store import CHECKPOINTS

SHARDS = "shards"
FAULT_ENV = "S2D_FAIL_AT"
FAULT_MARKER = "fault-injected"
FAULT_MODES = ("raise", "kill", "torn")
TRAINER_STATE = "trainer_state.json"
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


class InjectedFault(RuntimeError):
    """Raised by the fault-injection switch (S2D_FAIL_AT); never by real work."""


@dataclass(frozen=True)
class FaultPoint:
    target: str
    step: int
    mode: str = "raise"  # "raise" | "kill" | "torn"


def parse_fault_points(text: str) -> list[FaultPoint]:
    """`opd:3,eval/student_final:1:kill` -> [FaultPoint("opd", 3), FaultPoint("eval/student_final", 1, "kill")]."""
    points = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        fields = item.split(":")
        mode = "raise"
        if fields[-1] in FAULT_MODES:
            mode = fields.pop()
        if len(fields) != 2 or not fields[0] or not fields[1].isdigit() or int(fields[1]) < 1:
            raise ValueError(f"{FAULT_ENV}: {item!r} is not TARGET:STEP[:raise|kill|torn] with STEP >= 1")
        points.append(FaultPoint(fields[0], int(fields[1]), mode))
    return points


class FaultInjector:
    """Dies at the configured step of this stage, at most once per stage directory."""

    def __init__(self, name: str, stage: str, out_dir: Path, env: str | None = None) -> None:
        text = os.environ.get(FAULT_ENV, "") if env is None else env
        self.name = name
        self.marker = Path(out_dir) / CHECKPOINTS / FAULT_MARKER
        self.points = [p for p in parse_fault_points(text) if p.target in (name, stage)]

    def _due(self, step: int) -> FaultPoint | None:
        point = next((p for p in self.points if p.step == step), None)
        return None if point is None or self.marker.exists() else point

    def _fire(self, point: FaultPoint) -> None:
        self.marker.parent.mkdir(parents=True, exist_ok=True)
        self.marker.write_text(json.dumps({"target": point.target, "step": point.step, "mode": point.mode}))
        print(f"[{self.name}] {FAULT_ENV}: injected {point.mode} at step {point.step}", flush=True)
        if point.mode == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        raise InjectedFault(f"{FAULT_ENV}: injected failure of {self.name} at step {point.step}")

    def reached(self, step: int) -> None:
        """Call when `step` is done and durable; dies here if a fault point says so."""
        if point := self._due(step):
            self._fire(point)

    def tear_next_save(self, state: Any) -> None:
        """Before the checkpoint save of `state.global_step`: when a `torn` point is due there, that
        save writes half of its `trainer_state.json` (after the weights, optimizer, scheduler and RNG
        states, before older checkpoints are rotated away) and dies."""
        point = self._due(state.global_step)
        if point is None or point.mode != "torn":
            return

        def save_half(json_path: str) -> None:
            # the bytes TrainerState.save_to_json writes, cut off halfway
            text = json.dumps(dataclasses.asdict(state), indent=2, sort_keys=True) + "\n"
            with open(json_path, "w", encoding="utf-8") as fh:
                fh.write(text[: len(text) // 2])
            self._fire(point)

        state.save_to_json = save_half


def checkpoint_step(path: str | Path) -> int:
    match = _CHECKPOINT_RE.match(Path(path).name)
    if match is None:
        raise ValueError(f"not a checkpoint directory: {path}")
    return int(match.group(1))


# What a Trainer checkpoint holds, by file name. One process: model.safetensors (or its shards, or
# a PEFT adapter), optimizer.pt, scheduler.pt, rng_state.pth. FSDP: pytorch_model_fsdp*.bin or a
# pytorch_model_fsdp_0/ folder, optimizer*.bin or an optimizer_0/ folder, rng_state_<rank>.pth.
# DeepSpeed: a global_step<N>/ folder holds the model, optimizer and scheduler states.
_WEIGHTS = re.compile(
    r"^((model|adapter_model|pytorch_model)(-\d+-of-\d+)?\.(safetensors|bin)"
    r"|(model|pytorch_model)\.(safetensors|bin)\.index\.json|pytorch_model_fsdp.*)$"
)
_OPTIMIZER = re.compile(r"^optimizer(_\d+)?(\.pt|\.bin)?$")
_SCHEDULER = re.compile(r"^scheduler\.pt$")
_RNG_STATE = re.compile(r"^rng_state(_(\d+))?\.pth$")
# torch.save writes zip archives: a cut-off one has lost its central directory at the end
_TORCH_FILES = {".pt", ".pth", ".bin"}
_DCP_METADATA = ".metadata"  # torch.distributed.checkpoint writes it after every shard


def checkpoint_problem(path: str | Path) -> str | None:
    """Why the Trainer checkpoint `path` cannot be resumed from, or None when it is complete.

    Cheap: JSON files are parsed, safetensors headers read (the library checks that the data the
    header promises is all there), torch.save archives found whole from their central directory,
    distributed-checkpoint folders checked for the metadata they write last. Contents are not hashed.
    """
    path = Path(path)
    step = checkpoint_step(path)
    try:
        state = json.loads((path / TRAINER_STATE).read_text())
    except FileNotFoundError:
        return f"no {TRAINER_STATE}"
    except (OSError, ValueError) as err:
        return f"unreadable {TRAINER_STATE} ({err})"
    saved_at = state.get("global_step") if isinstance(state, dict) else None
    if saved_at != step:
        return f"{TRAINER_STATE} is of step {saved_at}, not {step}"
    names = [p.name for p in path.iterdir()]
    deepspeed = (path / f"global_step{step}").is_dir()
    needed = {"weights": _WEIGHTS, "optimizer state": _OPTIMIZER, "scheduler state": _SCHEDULER}
    if deepspeed:  # its folder holds these three
        needed = {}
    needed["rng state"] = _RNG_STATE
    for what, pattern in needed.items():
        if not any(pattern.match(name) for name in names):
            return f"no {what} file"
    ranks = sorted(int(m.group(2)) for name in names if (m := _RNG_STATE.match(name)) and m.group(2))
    if ranks != list(range(len(ranks))):
        return f"rng states of ranks {ranks}, not 0..{len(ranks) - 1}"
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        if problem := _file_problem(file):
            return f"{file.relative_to(path)}: {problem}"
    for folder in sorted(p for p in path.rglob("*") if p.is_dir()):
        if any(folder.glob("*.distcp")) and not (folder / _DCP_METADATA).is_file():
            return f"{folder.relative_to(path)}: distributed checkpoint without its {_DCP_METADATA}"
    return None


def _file_problem(file: Path) -> str | None:
    if file.suffix not in {".safetensors", ".json", *_TORCH_FILES, ".distcp"}:
        return None
    if file.stat().st_size == 0:
        return "empty"
    if file.suffix == ".safetensors":
        try:
            with safe_open(file, framework="pt"):
                return None
        except (SafetensorError, OSError) as err:
            return f"unreadable safetensors header ({err})"
    if file.suffix == ".json":
        try:
            index = json.loads(file.read_text())
        except (OSError, ValueError) as err:
            return f"unreadable JSON ({err})"
        shards = index.get("weight_map", {}).values() if isinstance(index, dict) else []
        missing = sorted({s for s in shards if not (file.parent / s).is_file()})
        return f"names missing weight shards {missing}" if missing else None
    if file.suffix in _TORCH_FILES and not zipfile.is_zipfile(file):
        return "cut off (not a whole torch.save archive)"
    return None


def resumable_checkpoint(out_dir: Path) -> tuple[str | None, list[str]]:
    """(the newest complete trainer checkpoint in `out_dir/checkpoints` or None, each newer one
    skipped with why). Skipped ones are removed, so the Trainer rewrites them when it gets there."""
    root = Path(out_dir) / CHECKPOINTS
    if not root.is_dir():
        return None, []
    found = sorted(
        (p for p in root.iterdir() if p.is_dir() and _CHECKPOINT_RE.match(p.name)), key=checkpoint_step
    )
    skipped = []
    while found:
        newest = found.pop()
        try:
            problem = checkpoint_problem(newest)
        except OSError as err:  # another process of this stage removing it now
            problem = f"unreadable ({err})"
        if problem is None:
            return str(newest), skipped
        skipped.append(f"{newest.name} ({problem})")
        shutil.rmtree(newest, ignore_errors=True)
    return None, skipped


def latest_checkpoint(out_dir: Path) -> str | None:
    """The newest complete trainer checkpoint in `out_dir/checkpoints`, or None (`resumable_checkpoint`)."""
    return resumable_checkpoint(out_dir)[0]


def finished_shards(out_dir: Path) -> int:
    root = Path(out_dir) / CHECKPOINTS / SHARDS
    return sum(1 for _ in root.rglob("*.jsonl")) if root.is_dir() else 0


def resume_point(out_dir: Path) -> tuple[int | None, str | None]:
    """(resumed_from_step, what) for a relaunched stage: the newest complete checkpoint's step, else
    the number of finished shards; (None, None) for a fresh start. `what` names the damaged
    checkpoints skipped on the way."""
    checkpoint, skipped = resumable_checkpoint(out_dir)
    removed = f" (skipped and removed damaged {'; '.join(skipped)})" if skipped else ""
    if checkpoint:
        return checkpoint_step(checkpoint), f"resuming from {Path(checkpoint).name}{removed}"
    if shards := finished_shards(out_dir):
        return shards, f"resuming with {shards} finished shard(s){removed}"
    return None, f"starting over{removed}" if skipped else None


def logged_mean_loss(history: list[dict[str, Any]]) -> float:
    """Mean training loss over all steps from the logged losses (each the mean since the previous log).

    Unlike `TrainOutput.training_loss`, which only covers the steps of the last `train()` call, this
    is the same for a resumed run as for an uninterrupted one.
    """
    total, steps, last = 0.0, 0, 0
    for entry in history:
        if "loss" in entry and "step" in entry:
            span = int(entry["step"]) - last
            total += float(entry["loss"]) * span
            steps += span
            last = int(entry["step"])
    return total / steps if steps else float("nan")


class ResumeCallback(TrainerCallback):
    """Added to every training stage's Trainer.

    - Logs at every checkpoint step, so a resumed run's log history (and everything computed from
      it: loss curves, mean losses, GRPO reward thirds) equals an uninterrupted run's.
    - On resume, replays the epochs already trained on samplers that reshuffle with a private
      generator on each pass (TRL's `RepeatSampler`), so the data order continues too.
    - Fires the fault-injection switch after a step (after its checkpoint on a checkpoint step).
    """

    def __init__(self, injector: FaultInjector) -> None:
        self.injector = injector

    def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs):
        epochs_done = int(state.epoch or 0) if state.global_step else 0
        sampler = _reshuffling_sampler(train_dataloader)
        if epochs_done and sampler is not None:
            import torch

            for _ in range(epochs_done):
                torch.randperm(sampler.num_samples, generator=sampler.generator)
        return control

    def on_step_end(self, args, state, control, **kwargs):
        if control.should_save:
            control.should_log = True
            self.injector.tear_next_save(state)
        else:
            self.injector.reached(state.global_step)
        return control

    def on_save(self, args, state, control, **kwargs):
        self.injector.reached(state.global_step)
        return control


def _reshuffling_sampler(dataloader: Any) -> Any:
    """TRL's RepeatSampler behind a (wrapped) dataloader, or None.

    RepeatSampler (GRPO, distillation) seeds a private generator once and draws one `randperm` per
    pass over the data, so a fresh trainer resumed in epoch e would replay epoch 0's order; the
    Trainer's own samplers reseed per epoch and need nothing.
    """
    seen, todo = set(), [dataloader]
    while todo:
        node = todo.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if type(node).__name__ == "RepeatSampler" and hasattr(node, "generator"):
            return node if getattr(node, "shuffle", True) else None
        todo.extend(getattr(node, name, None) for name in ("base_dataloader", "batch_sampler", "sampler"))
    return None


def training_callbacks(name: str, stage: str, out_dir: Path) -> list[TrainerCallback]:
    return [ResumeCallback(FaultInjector(name, stage, out_dir)), ProgressCallback(name)]


class ShardedGeneration:
    """Generation in shards that survive a crash: finished shards are read back, not regenerated.

    `run(part, items, size, produce)` cuts `items` into shards of `size` and calls
    `produce(index, items_of_shard)` for each shard not yet on disk, writing its rows to
    `checkpoints/shards/<part>/<index>.jsonl` atomically; it returns every shard's rows, read back
    from the files, in order (so a fresh and a resumed run assemble identical results). `produce`
    should seed its sampling from the shard index alone (`shard_seed`).
    """

    def __init__(self, name: str, stage: str, out_dir: Path) -> None:
        self.name = name
        self.root = Path(out_dir) / CHECKPOINTS / SHARDS
        self.injector = FaultInjector(name, stage, out_dir)
        self.ordinal = 0  # shards passed so far in this stage, over all parts

    def run(
        self, part: str, items: Sequence[Any], size: int, produce: Callable[[int, list], list[dict[str, Any]]]
    ) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for index, start in enumerate(range(0, len(items), size)):
            self.ordinal += 1
            path = self.root / part / f"{index:05d}.jsonl"
            if path.is_file():
                print(f"[{self.name}] shard {part}/{path.stem}: finished earlier, kept", flush=True)
            else:
                _write_jsonl_atomic(path, produce(index, list(items[start : start + size])))
                print(f"[{self.name}] shard {part}/{path.stem}: written", flush=True)
                self.injector.reached(self.ordinal)
            with open(path) as fh:
                rows.extend(json.loads(line) for line in fh if line.strip())
        return rows


def shard_seed(seed: int, index: int) -> int:
    """The sampling seed of shard `index`: independent of which shards ran in this process."""
    return seed + index


def _write_jsonl_atomic(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
