"""prune: a layer-pruned copy of a model, the student of a prune-then-distill bridge.

Drops the contiguous block of decoder layers whose removal changes the hidden states least: for
each start `l`, the angular distance arccos(cos(h_l, h_{l+n})) / pi between the residual stream
entering layer `l` and the one leaving layer `l+n-1`, averaged over the tokens of calibration
prompts from the unlabeled set (Gromov et al. 2024). The last layer is never in the block (its
output is the normed one). Writes `model/` and `pruning.json` (every start's distance).

    python -m sparse2dense.stages.prune SPEC.json
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from sparse2dense.data import load_records
from sparse2dense.graph import PruneInputs, Stage
from sparse2dense.models import load_model, load_tokenizer, save_model
from sparse2dense.prompts import encode_prompt, render_prompts
from sparse2dense.spec import StageSpec
from sparse2dense.stages.program import StageOutput, run_stage

PRUNING_FILE = "pruning.json"


@torch.no_grad()
def block_distances(model: Any, token_ids: list[list[int]], block: int, batch_size: int = 16) -> list[float]:
    """Mean angular distance (0-1) across each contiguous block of `block` layers, by start layer,
    over every real token of the prompts (padding left out)."""
    layers = model.config.num_hidden_layers
    starts = layers - block  # start + block <= layers - 1: the last layer stays
    totals, count = torch.zeros(starts, dtype=torch.float64), 0
    for first in range(0, len(token_ids), batch_size):
        batch = token_ids[first : first + batch_size]
        width = max(len(ids) for ids in batch)
        ids_B_T = torch.zeros(len(batch), width, dtype=torch.long)
        mask_B_T = torch.zeros(len(batch), width, dtype=torch.long)
        for row, ids in enumerate(batch):  # left-padded, as generation pads
            ids_B_T[row, width - len(ids) :] = torch.tensor(ids)
            mask_B_T[row, width - len(ids) :] = 1
        hidden = model(ids_B_T, attention_mask=mask_B_T, output_hidden_states=True).hidden_states
        real = mask_B_T.bool()
        for start in range(starts):
            cosine_B_T = torch.nn.functional.cosine_similarity(
                hidden[start].double(), hidden[start + block].double(), dim=-1
            )
            totals[start] += (torch.arccos(cosine_B_T.clamp(-1.0, 1.0))[real] / math.pi).sum()
        count += int(real.sum())
    return (totals / max(count, 1)).tolist()


def drop_layers(model: Any, start: int, block: int) -> Any:
    """The model without layers start..start+block-1 (in place); caches and config renumbered."""
    kept = [layer for i, layer in enumerate(model.model.layers) if not start <= i < start + block]
    model.model.layers = torch.nn.ModuleList(kept)
    for index, layer in enumerate(kept):
        layer.self_attn.layer_idx = index
    config = model.config
    if getattr(config, "layer_types", None):
        config.layer_types = [t for i, t in enumerate(config.layer_types) if not start <= i < start + block]
    config.num_hidden_layers = len(kept)
    return model


def run_prune(spec: StageSpec, out_dir: Path) -> StageOutput:
    inputs = spec.inputs_of(PruneInputs)
    tokenizer = load_tokenizer(spec, "model")
    model = load_model(spec, "model").eval()
    layers, keep = model.config.num_hidden_layers, inputs.prune.num_hidden_layers
    if not 1 <= keep < layers:
        raise ValueError(f"prune.num_hidden_layers must be 1..{layers - 1} (the model has {layers} layers)")
    block = layers - keep
    problems = load_records(spec.upstream_path("data") / "splits" / "unlabeled.jsonl")
    prompts = render_prompts(tokenizer, problems[: inputs.prune.calibration_prompts], inputs.prompt)
    distances = block_distances(model, [encode_prompt(tokenizer, p) for p in prompts], block)
    start = min(range(len(distances)), key=distances.__getitem__)
    print(
        f"[prune] dropping layers {start}..{start + block - 1} of {layers}: angular distance "
        f"{distances[start]:.3f} (largest block {max(distances):.3f})",
        flush=True,
    )
    pruned = drop_layers(model, start, block)
    save_model(pruned, tokenizer, out_dir)
    (out_dir / PRUNING_FILE).write_text(
        json.dumps(
            {"source_layers": layers, "dropped": [start, start + block], "distances": distances}, indent=1
        )
    )
    return StageOutput(
        metrics={
            "layers": float(keep),
            "dropped_from": float(start),
            "angular_distance": distances[start],
            "parameters_millions": sum(p.numel() for p in pruned.parameters()) / 1e6,
        }
    )


def main() -> None:
    run_stage(Stage.PRUNE, run_prune)


if __name__ == "__main__":
    main()
