"""Teacher-student divergence on fixed sequences: the C2 check at every stage boundary.

Given (prompt_ids, completion_ids) pairs, reports forward KL, reverse KL and the implicit reward
log pi_T - log pi_S over the completion tokens. Memory stays bounded at real vocabularies: each
model runs once per batch with `logits_to_keep=1` (its forward makes no [B, T, V] logits), its
final hidden states are caught at the backbone, and only the completion positions are projected
through the lm_head, `chunk_tokens` at a time (`losses.compute_chunked_divergence_sums`).
Inputs go to each model's own device. The forward runs through whatever the trainer wrapped the
model in (DDP, FSDP, a DeepSpeed engine), so sharded weights are gathered by their own hooks; the
lm_head is read directly, so it is gathered here (DeepSpeed ZeRO-3 via TRL's helper, FSDP2 DTensor
via `full_tensor`). Under ZeRO-3 the weights are usable only once the trainer prepared them:
`MeasureBeforeTraining` runs the "before" measurement at the start of training for that reason.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch.distributed.tensor import DTensor
from transformers import TrainerCallback

from sparse2dense.losses import DivergenceSums, compute_chunked_divergence_sums

DIVERGENCE_KEYS = ("forward_kl", "reverse_kl", "implicit_reward_mean", "implicit_reward_std", "tokens")


def _batch(pairs: list[tuple[list[int], list[int]]], pad_id: int) -> tuple[torch.Tensor, ...]:
    width = max(len(p) + len(c) for p, c in pairs)
    ids = torch.full((len(pairs), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(pairs), width), dtype=torch.long)
    target_mask = torch.zeros((len(pairs), width), dtype=torch.long)
    for row, (prompt, completion) in enumerate(pairs):
        seq = prompt + completion
        ids[row, : len(seq)] = torch.tensor(seq)
        attn[row, : len(seq)] = 1
        target_mask[row, len(prompt) : len(seq)] = 1
    return ids, attn, target_mask


def inner_model(model: Any) -> Any:
    """The transformers model inside a DDP / DeepSpeed / compiled wrapper (FSDP2 shards in place)."""
    from accelerate.utils import extract_model_from_parallel

    return extract_model_from_parallel(model)


def input_device(model: Any) -> torch.device:
    """Where a model's input ids must live: the device of its input embedding."""
    return inner_model(model).get_input_embeddings().weight.device


def final_hidden_states(model: Any, ids: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
    """[B, T, H] last hidden states (after the final norm), from one forward of `model` (a wrapper is
    fine: its hooks gather sharded weights) that makes logits for the last position only."""
    inner = inner_model(model)
    caught: list[torch.Tensor] = []

    def catch(_module, _args, output):
        caught.append(output[0] if isinstance(output, tuple) else output.last_hidden_state)

    kwargs: dict[str, Any] = {"input_ids": ids, "attention_mask": attn, "use_cache": False}
    if "logits_to_keep" in inspect.signature(inner.forward).parameters:
        kwargs["logits_to_keep"] = 1
    handle = inner.base_model.register_forward_hook(catch)
    try:
        model(**kwargs)
    finally:
        handle.remove()
    return caught[-1]


@contextlib.contextmanager
def gathered_lm_head(model: Any) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """(weight [V, H], bias [V] or None) of a model's lm_head, whole even when sharded.

    Models that scale or soft-cap their logits after the lm_head are refused: the diagnostics
    project hidden states themselves and would measure other distributions than the model's.
    """
    from trl.trainer.utils import maybe_gather_lm_head_ctx  # imports deepspeed only under ZeRO-3

    inner = inner_model(model)
    config = inner.config.get_text_config()
    for name in ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier"):
        if getattr(config, name, None) not in (None, 1.0):
            raise ValueError(
                f"divergence diagnostics: {type(inner).__name__} post-processes its logits ({name}), "
                "which the chunked lm_head projection does not reproduce"
            )
    head = inner.get_output_embeddings()
    weight, bias = head.weight, getattr(head, "bias", None)
    with maybe_gather_lm_head_ctx(weight, bias):
        if isinstance(weight, DTensor):
            weight = weight.full_tensor()
        if isinstance(bias, DTensor):
            bias = bias.full_tensor()
        yield weight, bias


@torch.no_grad()
def batch_divergence_sums(
    teacher: Any,
    student: Any,
    ids: torch.Tensor,
    attn: torch.Tensor,
    target_mask: torch.Tensor,
    chunk_tokens: int = 256,
) -> DivergenceSums:
    """Divergence sums over the target positions of one batch (`_batch` layout, on any device)."""
    # logits at t predict token t+1: the predicting positions of the completion tokens
    rows, cols = target_mask[:, 1:].cpu().nonzero(as_tuple=True)  # [N], [N]
    tokens = ids[:, 1:].cpu()[rows, cols]  # [N]
    hidden = []
    for model in (teacher, student):
        device = input_device(model)
        states = final_hidden_states(model, ids.to(device), attn.to(device))  # [B, T, H]
        hidden.append(states[rows.to(states.device), cols.to(states.device)])  # [N, H]
        del states
    with gathered_lm_head(teacher) as (t_head, t_bias), gathered_lm_head(student) as (s_head, s_bias):
        return compute_chunked_divergence_sums(
            hidden[0].to(t_head.device),
            t_head,
            hidden[1].to(s_head.device),
            s_head,
            tokens,
            chunk_tokens,
            teacher_bias_V=t_bias,
            student_bias_V=s_bias,
        )


@contextlib.contextmanager
def _eval_mode(*models: Any) -> Iterator[None]:
    modes = [m.training for m in models]
    for m in models:
        m.eval()
    try:
        yield
    finally:
        for m, mode in zip(models, modes, strict=True):
            m.train(mode)


def measure_divergence(
    teacher: Any,
    student: Any,
    pairs: list[tuple[list[int], list[int]]],
    pad_id: int,
    batch_size: int = 8,
    chunk_tokens: int = 256,
) -> dict[str, float]:
    """Token-weighted forward/reverse KL and implicit reward over the completion tokens of `pairs`.

    Every process of a distributed run measures all pairs (the sharded forwards are collective);
    the models' train/eval modes are restored afterwards.
    """
    totals: DivergenceSums | None = None
    with _eval_mode(teacher, student):
        for start in range(0, len(pairs), batch_size):
            ids, attn, target = _batch(pairs[start : start + batch_size], pad_id)
            sums = batch_divergence_sums(teacher, student, ids, attn, target, chunk_tokens)
            totals = (
                sums
                if totals is None
                else DivergenceSums(*(a + b.to(a.device) for a, b in zip(totals, sums, strict=True)))
            )
    tokens = float(totals.tokens) if totals is not None else 0.0
    if tokens == 0:
        return dict.fromkeys(DIVERGENCE_KEYS, 0.0)
    mean = float(totals.reward) / tokens
    return {
        "forward_kl": float(totals.forward_kl) / tokens,
        "reverse_kl": float(totals.reverse_kl) / tokens,
        "implicit_reward_mean": mean,
        "implicit_reward_std": max(float(totals.reward_sq) / tokens - mean**2, 0.0) ** 0.5,
        "tokens": tokens,
    }


class MeasureBeforeTraining(TrainerCallback):
    """Runs `measure()` once the trainer has prepared its models and before the first step.

    Under DeepSpeed ZeRO-3 the weights are partitioned from loading on, and only the trainer's
    engines gather them, so this is the first moment a "before" measurement can run. The result is
    kept in `path` (written by the main process): a stage relaunched from a checkpoint reads it
    instead of measuring a half-trained model; one that starts over measures again, so its sampling
    draws the same random numbers as an uninterrupted run.
    """

    def __init__(self, measure: Callable[[], dict[str, float]], path: Path) -> None:
        self.measure, self.path = measure, Path(path)
        self.result: dict[str, float] = {}

    def on_train_begin(self, args, state, control, **kwargs):
        if self.path.is_file() and state.global_step > 0:
            self.result = json.loads(self.path.read_text())
        elif state.global_step > 0:
            print(f"no 'before' divergence kept at {self.path}; resuming without one", flush=True)
            self.result = dict.fromkeys(DIVERGENCE_KEYS, math.nan)
        else:
            self.result = self.measure()
            if state.is_world_process_zero:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                tmp = self.path.with_suffix(".tmp")
                tmp.write_text(json.dumps(self.result))
                os.replace(tmp, self.path)
        return control
