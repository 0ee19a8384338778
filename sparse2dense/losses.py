"""Token-level divergences between teacher and student, as pure tensor functions.

These are the measurement side of the bridge: training itself runs in TRL's DistillationTrainer
(its chunked divergence kernel, beta=0 for the forward-KL warmup and beta=1 for OPD), and these
functions report the quantity each trainer minimises on fixed held-out sequences, before and after
the stage. Math in float32; the mean is over unmasked positions, and an all-masked batch gives 0
(divisor clamped to 1). `compute_chunked_divergence_sums` is the bounded-memory form the
diagnostics use at real vocabularies: logits for a few positions at a time, never [B, T, V].
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


def _masked_mean(per_token_B_T: torch.Tensor, mask_B_T: torch.Tensor) -> torch.Tensor:
    mask = mask_B_T.to(per_token_B_T.dtype)
    return (per_token_B_T * mask).sum() / mask.sum().clamp(min=1.0)


def compute_forward_kl(
    teacher_logits_B_T_V: torch.Tensor, student_logits_B_T_V: torch.Tensor, mask_B_T: torch.Tensor
) -> torch.Tensor:
    """Mean over masked tokens of KL(pi_T || pi_S) = sum_v pi_T(v) (log pi_T(v) - log pi_S(v)).

    The warmup objective (PAPER.md stage 2a), full vocabulary, on teacher-sampled sequences.
    """
    t_logp = F.log_softmax(teacher_logits_B_T_V.float(), dim=-1)  # [B, T, V]
    s_logp = F.log_softmax(student_logits_B_T_V.float(), dim=-1)  # [B, T, V]
    per_token = (t_logp.exp() * (t_logp - s_logp)).sum(-1)  # [B, T]
    return _masked_mean(per_token, mask_B_T)


def compute_reverse_kl(
    teacher_logits_B_T_V: torch.Tensor, student_logits_B_T_V: torch.Tensor, mask_B_T: torch.Tensor
) -> torch.Tensor:
    """Mean over masked tokens of KL(pi_S || pi_T) = sum_v pi_S(v) (log pi_S(v) - log pi_T(v)).

    The OPD objective (PAPER.md stage 2b), full vocabulary, on student-sampled sequences.
    """
    t_logp = F.log_softmax(teacher_logits_B_T_V.float(), dim=-1)  # [B, T, V]
    s_logp = F.log_softmax(student_logits_B_T_V.float(), dim=-1)  # [B, T, V]
    per_token = (s_logp.exp() * (s_logp - t_logp)).sum(-1)  # [B, T]
    return _masked_mean(per_token, mask_B_T)


def compute_implicit_reward(
    teacher_logits_B_T_V: torch.Tensor,
    student_logits_B_T_V: torch.Tensor,
    tokens_B_T: torch.Tensor,
    mask_B_T: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std over masked tokens of r_t = log pi_T(y_t) - log pi_S(y_t) (sampled-token OPD reward)."""
    t_logp = F.log_softmax(teacher_logits_B_T_V.float(), dim=-1).gather(-1, tokens_B_T[..., None])[..., 0]
    s_logp = F.log_softmax(student_logits_B_T_V.float(), dim=-1).gather(-1, tokens_B_T[..., None])[..., 0]
    reward = (t_logp - s_logp)[mask_B_T.bool()]  # [N]
    if reward.numel() == 0:
        return torch.zeros(()), torch.zeros(())
    return reward.mean(), reward.std(unbiased=False)


def compute_token_divergences(
    teacher_logits_N_V: torch.Tensor, student_logits_N_V: torch.Tensor, tokens_N: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per position: forward KL(pi_T || pi_S), reverse KL(pi_S || pi_T), and r = log pi_T(y) - log pi_S(y).

    The three quantities above for flat positions, no mask, no reduction; each [N], float32.
    """
    t_logp = F.log_softmax(teacher_logits_N_V.float(), dim=-1)  # [N, V]
    s_logp = F.log_softmax(student_logits_N_V.float(), dim=-1)  # [N, V]
    gap = t_logp - s_logp  # [N, V]
    forward = (t_logp.exp() * gap).sum(-1)  # [N]
    reverse = -(s_logp.exp() * gap).sum(-1)  # [N]
    reward = gap.gather(-1, tokens_N[:, None])[:, 0]  # [N]
    return forward, reverse, reward


class DivergenceSums(NamedTuple):
    """Sums over scored positions (float64, on the scoring device); divide by `tokens` for means."""

    forward_kl: torch.Tensor
    reverse_kl: torch.Tensor
    reward: torch.Tensor
    reward_sq: torch.Tensor
    tokens: torch.Tensor


def compute_chunked_divergence_sums(
    teacher_hidden_N_Ht: torch.Tensor,
    teacher_head_V_Ht: torch.Tensor,
    student_hidden_N_Hs: torch.Tensor,
    student_head_V_Hs: torch.Tensor,
    tokens_N: torch.Tensor,
    chunk_size: int,
    teacher_bias_V: torch.Tensor | None = None,
    student_bias_V: torch.Tensor | None = None,
) -> DivergenceSums:
    """`compute_token_divergences` summed over N positions given as final hidden states and lm_heads.

    Logits are made `chunk_size` positions at a time (in the heads' dtype, as the models make them,
    then float32), so the extra memory is O(chunk_size * V), never O(N * V). N = 0 gives zero sums.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    device = student_hidden_N_Hs.device
    sums = [torch.zeros((), dtype=torch.float64, device=device) for _ in range(4)]
    for start in range(0, tokens_N.shape[0], chunk_size):
        end = start + chunk_size
        t_logits = F.linear(teacher_hidden_N_Ht[start:end], teacher_head_V_Ht, teacher_bias_V)  # [C, V]
        s_logits = F.linear(student_hidden_N_Hs[start:end], student_head_V_Hs, student_bias_V)  # [C, V]
        forward, reverse, reward = compute_token_divergences(
            t_logits.to(device), s_logits, tokens_N[start:end].to(device)
        )
        del t_logits, s_logits
        for i, part in enumerate((forward, reverse, reward, reward.square())):
            sums[i] += part.sum(dtype=torch.float64)
    count = torch.tensor(float(tokens_N.shape[0]), dtype=torch.float64, device=device)
    return DivergenceSums(*sums, tokens=count)


DIVERGENCE_TILE_TOKENS = 1024


def bound_divergence_tiles(tokens: int = DIVERGENCE_TILE_TOKENS) -> None:
    """Make TRL's chunked divergence kernel (the warmup and OPD loss) project `tokens` positions per tile.

    TRL's default, 4096 positions x 32768 vocabulary entries in float32 for each model, makes the
    kernel's own buffers grow with the sequence up to 4096 tokens (1 GiB); at 1024 they are a fixed
    256 MiB from 1024 tokens on, and the tiles are still large matrix products. TRL exposes the
    tile size only as this module constant, so its absence is an error rather than a silent no-op.
    """
    from trl.kernels import chunked_divergence

    if not isinstance(getattr(chunked_divergence, "TOKEN_CHUNK_SIZE", None), int):
        raise RuntimeError("trl.kernels.chunked_divergence.TOKEN_CHUNK_SIZE is gone: check the TRL upgrade")
    chunked_divergence.TOKEN_CHUNK_SIZE = tokens
