"""Tiny random models on the real tokenizers in ../shared/tokenizers (S2D_SHARED_DIR overrides).

`save_qwen3` writes a Qwen3 checkpoint built from the real Qwen3-1.7B config (vocabulary 151,936,
tied embeddings, bf16 weights) shrunk to a few layers, with the real tokenizer, chat template and
generation config beside it: what `from_pretrained` of the hub model returns, minus the size.
`save_bos_llama` writes a Llama model on a tokenizer that adds a BOS (Mixtral's) with a chat
template that writes the BOS itself, as Llama 3's does.
"""

import json
import os
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("S2D_SHARED_DIR") or ROOT.parent / "shared")
TOKENIZERS = SHARED / "tokenizers"
QWEN3 = TOKENIZERS / "qwen3"
BOS_TOKENIZER = TOKENIZERS / "mixtral-8x22b-v0.1"
# Mistral-style turns; like Llama 3's template it opens with the BOS token as text.
BOS_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}[INST] {{ message['content'] }} [/INST]{% endfor %}"
)


def have_tokenizers() -> bool:
    return (QWEN3 / "tokenizer.json").is_file() and (BOS_TOKENIZER / "tokenizer.json").is_file()


def save_qwen3(
    target: Path,
    *,
    layers: int = 1,
    hidden: int = 32,
    heads: int = 4,
    kv_heads: int = 2,
    seed: int = 0,
    dtype: str = "bfloat16",
    tied: bool = True,
) -> Path:
    """A random Qwen3 with the real vocabulary and tokenizer files, saved as safetensors."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    raw = json.loads((QWEN3 / "model-configs" / "Qwen3-1.7B.config.json").read_text())
    raw |= {
        "num_hidden_layers": layers,
        "max_window_layers": layers,
        "hidden_size": hidden,
        "intermediate_size": 2 * hidden,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": hidden // heads,
        "max_position_embeddings": 4096,
        "tie_word_embeddings": tied,
    }
    config = AutoConfig.for_model(**raw)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    model.save_pretrained(target, safe_serialization=True)
    AutoTokenizer.from_pretrained(QWEN3).save_pretrained(target)
    shutil.copy(QWEN3 / "generation_config.json", target / "generation_config.json")
    return target


def bos_tokenizer():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(BOS_TOKENIZER)
    tok.chat_template = BOS_TEMPLATE
    return tok


def save_bos_llama(target: Path, *, hidden: int = 32, seed: int = 0) -> Path:
    """A random one-layer Llama on the BOS-adding tokenizer (32,000 tokens) with BOS_TEMPLATE."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = bos_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(target, safe_serialization=True)
    tok.save_pretrained(target)
    return target
