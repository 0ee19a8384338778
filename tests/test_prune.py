"""The prune stage's pieces: dropping a block of layers keeps a working model (cache included), and
the dropped block is the one whose ends are closest (angular distance)."""

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from sparse2dense.stages.prune import block_distances, drop_layers


def _model(layers: int = 6) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    return LlamaForCausalLM(config).eval()


def test_dropping_a_block_equals_running_the_kept_layers():
    model, reference = _model(), _model()
    ids = torch.tensor([[1, 5, 9, 3, 7]])
    drop_layers(model, start=2, block=3)
    assert model.config.num_hidden_layers == 3
    assert [layer.self_attn.layer_idx for layer in model.model.layers] == [0, 1, 2]
    kept = torch.nn.ModuleList([reference.model.layers[i] for i in (0, 1, 5)])
    reference.model.layers = kept
    reference.config.num_hidden_layers = 3
    for index, layer in enumerate(kept):
        layer.self_attn.layer_idx = index
    with torch.no_grad():
        assert torch.equal(model(ids).logits, reference(ids).logits)


def test_the_pruned_model_generates_with_its_cache_as_without():
    model = drop_layers(_model(), start=1, block=2)
    ids = torch.tensor([[1, 5, 9, 3]])
    with torch.no_grad():
        cached = model.generate(ids, max_new_tokens=6, do_sample=False, use_cache=True, pad_token_id=0)
        uncached = model.generate(ids, max_new_tokens=6, do_sample=False, use_cache=False, pad_token_id=0)
    assert torch.equal(cached, uncached)


def test_the_chosen_block_is_the_one_that_changes_the_stream_least():
    model = _model(6)
    with torch.no_grad():  # layers 2 and 3 become identities: dropping them changes nothing
        for i in (2, 3):
            model.model.layers[i].self_attn.o_proj.weight.zero_()
            model.model.layers[i].mlp.down_proj.weight.zero_()
    distances = block_distances(model, [[1, 2, 3, 4, 5], [6, 7, 8]], block=2)
    assert len(distances) == 4  # starts 0..3: the last layer is never dropped
    assert min(range(4), key=distances.__getitem__) == 2
    assert distances[2] < 1e-6 < min(d for i, d in enumerate(distances) if i != 2)


def test_padding_does_not_change_the_distances():
    model = _model(5)
    prompts = [[1, 2, 3, 4, 5, 6, 7], [8, 9, 10]]
    batched = block_distances(model, prompts, block=2, batch_size=2)
    one = [block_distances(model, [p], block=2, batch_size=1) for p in prompts]
    pooled = [(a * 7 + b * 3) / 10 for a, b in zip(*one, strict=True)]
    assert max(abs(x - y) for x, y in zip(batched, pooled, strict=True)) < 1e-6
