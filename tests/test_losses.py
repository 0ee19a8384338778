"""KL identities for the measurement functions, and the chunked form against the plain one."""

import pytest
import torch

from sparse2dense.losses import (
    DIVERGENCE_TILE_TOKENS,
    bound_divergence_tiles,
    compute_chunked_divergence_sums,
    compute_forward_kl,
    compute_implicit_reward,
    compute_reverse_kl,
)
from tests.largest_tensor import LargestTensor


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


# ---- the chunked form the diagnostics use -----------------------------------------------------------


def _heads(n=11, v=7, ht=5, hs=3, seed=7):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(n, ht, generator=g),
        torch.randn(v, ht, generator=g),
        torch.randn(n, hs, generator=g),
        torch.randn(v, hs, generator=g),
        torch.randint(0, v, (n,), generator=g),
        torch.randn(v, generator=g),
    )


@pytest.mark.parametrize("chunk", [1, 4, 11, 64])
def test_chunked_divergence_sums_equal_the_unchunked_means(chunk):
    h_t, w_t, h_s, w_s, tokens, bias = _heads()
    sums = compute_chunked_divergence_sums(h_t, w_t, h_s, w_s, tokens, chunk, teacher_bias_V=bias)
    t_logits, s_logits = (h_t @ w_t.T + bias)[None], (h_s @ w_s.T)[None]  # [1, N, V]
    mask = torch.ones(1, tokens.numel())
    n = float(sums.tokens)
    assert n == tokens.numel()
    assert float(sums.forward_kl) / n == pytest.approx(
        compute_forward_kl(t_logits, s_logits, mask).item(), abs=1e-5
    )
    assert float(sums.reverse_kl) / n == pytest.approx(
        compute_reverse_kl(t_logits, s_logits, mask).item(), abs=1e-5
    )
    mean, std = compute_implicit_reward(t_logits, s_logits, tokens[None], mask)
    assert float(sums.reward) / n == pytest.approx(mean.item(), abs=1e-5)
    assert (float(sums.reward_sq) / n - (float(sums.reward) / n) ** 2) ** 0.5 == pytest.approx(
        std.item(), abs=1e-4
    )


def test_chunked_divergence_sums_of_no_positions_are_zero():
    h_t, w_t, h_s, w_s, tokens, _ = _heads()
    sums = compute_chunked_divergence_sums(h_t[:0], w_t, h_s[:0], w_s, tokens[:0], 4)
    assert all(float(x) == 0.0 for x in sums)
    with pytest.raises(ValueError, match="chunk_size"):
        compute_chunked_divergence_sums(h_t, w_t, h_s, w_s, tokens, 0)


def test_chunked_divergence_sums_never_build_logits_for_all_positions():
    h_t, w_t, h_s, w_s, tokens, _ = _heads(n=512, v=1000, ht=4, hs=4)
    with LargestTensor() as chunked:
        compute_chunked_divergence_sums(h_t, w_t, h_s, w_s, tokens, 16)
    with LargestTensor() as plain:
        compute_forward_kl((h_t @ w_t.T)[None], (h_s @ w_s.T)[None], torch.ones(1, 512))
    assert chunked.numel == 16 * 1000  # one chunk's logits
    assert plain.numel == 512 * 1000


def test_trl_divergence_tiles_are_bounded_to_our_height(monkeypatch):
    from trl.kernels import chunked_divergence

    monkeypatch.setattr(chunked_divergence, "TOKEN_CHUNK_SIZE", 4096)
    bound_divergence_tiles()
    assert chunked_divergence.TOKEN_CHUNK_SIZE == DIVERGENCE_TILE_TOKENS == 1024
    monkeypatch.delattr(chunked_divergence, "TOKEN_CHUNK_SIZE")
    with pytest.raises(RuntimeError, match="TOKEN_CHUNK_SIZE"):
        bound_divergence_tiles()
