"""Token-level divergences between teacher and student, as pure tensor functions.

These are the measurement side of the bridge: training itself runs in TRL's trainers (GKD for the
forward-KL warmup, DistillationTrainer for OPD), and these functions report the quantity each
trainer minimises on fixed held-out sequences, before and after the stage. Math in float32;
the mean is over unmasked positions, and an all-masked batch gives 0 (divisor clamped to 1).
"""

from __future__ import annotations

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
