"""Teacher-student divergence on fixed sequences: the C2 check at every stage boundary.

Given (prompt_ids, completion_ids) pairs, runs both models once and reports forward KL,
reverse KL and the implicit reward log pi_T - log pi_S over the completion tokens.
"""

from __future__ import annotations

from typing import Any

import torch

from sparse2dense.losses import compute_forward_kl, compute_implicit_reward, compute_reverse_kl


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


@torch.no_grad()
def measure_divergence(
    teacher: Any,
    student: Any,
    pairs: list[tuple[list[int], list[int]]],
    pad_id: int,
    batch_size: int = 32,
) -> dict[str, float]:
    """Token-weighted forward/reverse KL and implicit reward over the completion tokens of `pairs`."""
    teacher.eval()
    student.eval()
    totals = {"forward_kl": 0.0, "reverse_kl": 0.0, "implicit_reward_mean": 0.0}
    sq_reward, tokens = 0.0, 0
    for start in range(0, len(pairs), batch_size):
        ids, attn, target = _batch(pairs[start : start + batch_size], pad_id)
        # logits at t predict token t+1: align the predicting positions with the completion tokens
        t_logits = teacher(input_ids=ids, attention_mask=attn).logits[:, :-1]  # [B, T-1, V]
        s_logits = student(input_ids=ids, attention_mask=attn).logits[:, :-1]  # [B, T-1, V]
        mask, next_tokens = target[:, 1:], ids[:, 1:]
        n = int(mask.sum())
        if n == 0:
            continue
        fkl = compute_forward_kl(t_logits, s_logits, mask).item()
        rkl = compute_reverse_kl(t_logits, s_logits, mask).item()
        mean, std = compute_implicit_reward(t_logits, s_logits, next_tokens, mask)
        totals["forward_kl"] += fkl * n
        totals["reverse_kl"] += rkl * n
        totals["implicit_reward_mean"] += mean.item() * n
        sq_reward += (std.item() ** 2 + mean.item() ** 2) * n
        tokens += n
    if tokens == 0:
        return {k: 0.0 for k in [*totals, "implicit_reward_std", "tokens"]}
    out = {k: v / tokens for k, v in totals.items()}
    out["implicit_reward_std"] = max(sq_reward / tokens - out["implicit_reward_mean"] ** 2, 0.0) ** 0.5
    out["tokens"] = float(tokens)
    return out
