"""KL identities for the measurement functions."""

import torch

from sparse2dense.losses import compute_forward_kl, compute_implicit_reward, compute_reverse_kl


def _logits(seed, shape=(2, 3, 5)):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def test_kl_of_identical_distributions_is_zero():
    x, mask = _logits(0), torch.ones(2, 3)
    assert compute_forward_kl(x, x, mask).item() == 0.0 or abs(compute_forward_kl(x, x, mask).item()) < 1e-6
    assert abs(compute_reverse_kl(x, x, mask).item()) < 1e-6


def test_forward_and_reverse_match_definitions():
    t, s, mask = _logits(1), _logits(2), torch.ones(2, 3)
    p, q = t.softmax(-1), s.softmax(-1)
    forward = (p * (p.log() - q.log())).sum(-1).mean()
    reverse = (q * (q.log() - p.log())).sum(-1).mean()
    assert torch.allclose(compute_forward_kl(t, s, mask), forward, atol=1e-5)
    assert torch.allclose(compute_reverse_kl(t, s, mask), reverse, atol=1e-5)
    assert not torch.allclose(forward, reverse)


def test_mask_excludes_positions_and_all_masked_is_zero():
    t, s = _logits(3), _logits(4)
    mask = torch.tensor([[1, 0, 0], [0, 0, 0]])
    only = compute_forward_kl(t[:1, :1], s[:1, :1], torch.ones(1, 1))
    assert torch.allclose(compute_forward_kl(t, s, mask), only)
    assert compute_reverse_kl(t, s, torch.zeros(2, 3)).item() == 0.0


def test_implicit_reward_is_logprob_difference():
    t, s = _logits(5), _logits(6)
    tokens = torch.zeros(2, 3, dtype=torch.long)
    mean, _ = compute_implicit_reward(t, s, tokens, torch.ones(2, 3))
    expected = (t.log_softmax(-1)[..., 0] - s.log_softmax(-1)[..., 0]).mean()
    assert torch.allclose(mean, expected, atol=1e-6)
