"""Divergence diagnostics: the chunked measurement against the full-logit one, bounded memory, and
the "before" measurement that runs once the trainer is ready and is kept for a relaunch."""

import json
import math
from types import SimpleNamespace

import pytest
import torch
from transformers import Qwen3Config, Qwen3ForCausalLM

from sparse2dense.diagnostics import MeasureBeforeTraining, gathered_lm_head, measure_divergence
from sparse2dense.losses import compute_forward_kl, compute_reverse_kl
from tests.largest_tensor import LargestTensor


def _model(vocab, hidden, layers, seed):
    torch.manual_seed(seed)
    config = Qwen3Config(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=hidden // 2,
        max_position_embeddings=128,
        tie_word_embeddings=seed % 2 == 0,
    )
    return Qwen3ForCausalLM(config).eval()


def _pairs(vocab, seed, n=5):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        prompt = torch.randint(1, vocab, (3 + i,), generator=g).tolist()
        completion = torch.randint(1, vocab, (2 + 3 * i,), generator=g).tolist()
        out.append((prompt, completion))
    return out


@torch.no_grad()
def _full_logit_reference(teacher, student, pairs, pad_id):
    """What the diagnostics measured before chunking: whole [1, T, V] logits, one pair at a time."""
    sums, rewards = {"forward_kl": 0.0, "reverse_kl": 0.0}, []
    for prompt, completion in pairs:
        ids = torch.tensor([prompt + completion])
        t, s = teacher(input_ids=ids).logits[:, :-1], student(input_ids=ids).logits[:, :-1]
        mask = torch.zeros(1, ids.shape[1] - 1)
        mask[:, len(prompt) - 1 :] = 1
        n = int(mask.sum())
        sums["forward_kl"] += compute_forward_kl(t, s, mask).item() * n
        sums["reverse_kl"] += compute_reverse_kl(t, s, mask).item() * n
        logp = (t.log_softmax(-1) - s.log_softmax(-1)).gather(-1, ids[:, 1:, None])[..., 0]
        rewards.append(logp[mask.bool()])
    reward = torch.cat(rewards)
    out = {k: v / reward.numel() for k, v in sums.items()}
    out |= {
        "implicit_reward_mean": reward.mean().item(),
        "implicit_reward_std": reward.std(unbiased=False).item(),
    }
    return out | {"tokens": float(reward.numel())}


@pytest.mark.parametrize(("batch_size", "chunk_tokens"), [(1, 1), (2, 3), (8, 256)])
def test_chunked_measurement_equals_the_full_logit_one(batch_size, chunk_tokens):
    teacher, student = _model(97, 32, 2, seed=0), _model(97, 16, 1, seed=1)
    pairs = _pairs(97, seed=2)
    expected = _full_logit_reference(teacher, student, pairs, pad_id=0)
    got = measure_divergence(
        teacher, student, pairs, pad_id=0, batch_size=batch_size, chunk_tokens=chunk_tokens
    )
    assert got == pytest.approx(expected, abs=1e-5)
    assert got["forward_kl"] > 0 and got["reverse_kl"] > 0


def test_measurement_restores_train_mode_and_handles_no_completion_tokens():
    teacher, student = _model(50, 16, 1, seed=0), _model(50, 16, 1, seed=1)
    student.train()
    measure_divergence(teacher, student, _pairs(50, seed=3, n=2), pad_id=0)
    assert student.training and not teacher.training
    empty = measure_divergence(teacher, student, [([1, 2, 3], [])], pad_id=0)
    assert empty == {k: 0.0 for k in empty} and len(empty) == 5


def test_measurement_never_builds_logits_for_a_whole_batch():
    vocab, hidden, chunk = 4096, 16, 8
    teacher, student = _model(vocab, hidden, 1, seed=0), _model(vocab, hidden, 1, seed=1)
    pairs = [([5] * 10, [7] * 30)] * 4  # one batch of 4 x 40 tokens
    with LargestTensor() as largest:
        measure_divergence(teacher, student, pairs, pad_id=0, batch_size=4, chunk_tokens=chunk)
    # a chunk's logits or the lm_head itself, never [4, 40, V] (655,360 elements)
    assert largest.numel <= max(chunk * vocab, vocab * hidden)


def test_models_that_post_process_logits_are_refused():
    model = _model(50, 16, 1, seed=0)
    model.config.final_logit_softcapping = 30.0
    with pytest.raises(ValueError, match="final_logit_softcapping"), gathered_lm_head(model):
        pass


def _state(step):
    return SimpleNamespace(global_step=step, is_world_process_zero=True)


def test_before_measurement_is_kept_and_never_repeated(tmp_path):
    calls = []

    def measure():
        calls.append(1)
        return {"forward_kl": 0.5}

    path = tmp_path / "checkpoints" / "before.json"
    first = MeasureBeforeTraining(measure, path)
    first.on_train_begin(None, _state(0), None)
    assert first.result == {"forward_kl": 0.5} and json.loads(path.read_text()) == first.result
    relaunched = MeasureBeforeTraining(measure, path)  # resumed from a checkpoint: read, not measured
    relaunched.on_train_begin(None, _state(3), None)
    assert relaunched.result == first.result and len(calls) == 1
    path.unlink()  # resumed, and nothing kept: never measure the half-trained model as "before"
    lost = MeasureBeforeTraining(measure, path)
    lost.on_train_begin(None, _state(3), None)
    assert math.isnan(lost.result["forward_kl"]) and len(calls) == 1
