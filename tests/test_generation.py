"""Generation backend selection, and the vLLM backend where vllm is installed."""

import pytest

from sparse2dense import generation
from sparse2dense.generation import SamplingParams, resolve_backend


@pytest.fixture
def facts(monkeypatch):
    def set_facts(vllm: bool, cuda: bool) -> None:
        monkeypatch.setattr(generation, "vllm_importable", lambda: vllm)
        monkeypatch.setattr(generation, "cuda_available", lambda: cuda)

    return set_facts


@pytest.mark.parametrize(
    ("vllm", "cuda", "expected"),
    [
        (True, True, "vllm"),
        (True, False, "transformers"),
        (False, True, "transformers"),
        (False, False, "transformers"),
    ],
)
def test_auto_picks_vllm_only_with_vllm_and_cuda(facts, vllm, cuda, expected):
    facts(vllm, cuda)
    assert resolve_backend("auto") == expected


def test_explicit_backends(facts):
    facts(vllm=True, cuda=True)
    assert resolve_backend("transformers") == "transformers"
    assert resolve_backend("vllm") == "vllm"
    facts(vllm=False, cuda=True)
    with pytest.raises(RuntimeError, match=r"vllm is not installed.*sparse2dense\[vllm\]"):
        resolve_backend("vllm")
    with pytest.raises(ValueError, match="unknown generation backend"):
        resolve_backend("sglang")


def test_this_machine():
    # Without vllm (the CPU test machines) auto means transformers.
    if not generation.vllm_importable() or not generation.cuda_available():
        assert resolve_backend("auto") == "transformers"


def test_vllm_sampling_params():
    pytest.importorskip("vllm")
    params = generation.vllm_sampling_params(
        SamplingParams(n=4, temperature=0.7, top_p=0.8, top_k=20, max_new_tokens=64, seed=3)
    )
    assert (params.n, params.temperature, params.top_p, params.top_k, params.max_tokens, params.seed) == (
        4,
        0.7,
        0.8,
        20,
        64,
        3,
    )


def test_each_prompt_of_a_shard_gets_its_own_seed():
    """One seed for every request of a shard would draw the same random numbers for every problem."""
    import hashlib

    seeds = generation.request_seeds(42, 64)
    assert len(set(seeds)) == 64 and all(0 <= s < 2**63 for s in seeds)
    assert generation.request_seeds(42, 64) == seeds  # deterministic: a resumed shard resamples alike
    assert generation.request_seeds(42, 10) == seeds[:10]  # a prompt's seed depends on its index only
    assert not set(generation.request_seeds(43, 64)) & set(seeds)  # the next shard's seed: new streams
    digest = hashlib.sha256(b"42:5").digest()[:8]
    assert seeds[5] == int.from_bytes(digest, "big") >> 1
