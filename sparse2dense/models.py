"""Loading and saving models and tokenizers for the stage programs.

A model role ("policy", "teacher", "student") resolves to an upstream stage's `model/` directory
when one is given, else to the configured hub id or local path; a local `.gguf` file resolves to its
converted safetensors folder in the store (`gguf.py`). Weights are saved as safetensors;
`trust_remote_code` stays off unless the model's config turns it on.

A model that is trained is loaded in float32 whatever its configured `dtype`: AdamW on bf16 weights
loses every update smaller than bf16's resolution (at lr 1e-6 most of them), so the weights stay fp32
master copies and bf16 is the compute dtype (the memory plan's `bf16`: autocast, or FSDP's mixed
precision policy). Frozen models (the teacher of warmup/opd, generation) load in the configured
dtype with gradients off, which also keeps FSDP from upcasting them. Under FSDP a model stays where
`from_pretrained` put it (CPU on the main process, `meta` elsewhere with cpu-RAM-efficient loading)
and accelerate shards it onto the GPUs, so no GPU ever holds a whole fp32 copy.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from sparse2dense.gguf import convert_gguf, is_gguf
from sparse2dense.store import store_of

MODEL_DIR = "model"
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_model(spec: Any, role: str, trainable: bool = False) -> tuple[str, dict[str, Any]]:
    """(path or hub id, from_pretrained kwargs) for a role of a stage spec; a trained model is fp32."""
    configured = spec.inputs.models.get(role)
    if role in spec.upstream:
        source = str(spec.upstream_path(role) / MODEL_DIR)
    elif configured is not None and is_gguf(configured.name_or_path):
        store = store_of(Path(spec.output_dir))
        source = str(convert_gguf(Path(configured.name_or_path).expanduser(), store, configured.sha256))
    elif configured is not None and configured.name_or_path:
        source = configured.name_or_path
    else:
        raise KeyError(f"stage {spec.name}: no model for role {role!r} (no upstream and no name_or_path)")
    dtype = configured.dtype if configured is not None else "auto"
    kwargs: dict[str, Any] = {"trust_remote_code": configured is not None and configured.trust_remote_code}
    if trainable:
        kwargs["dtype"] = torch.float32
    elif dtype != "auto":
        kwargs["dtype"] = _DTYPES[dtype]
    elif not torch.cuda.is_available():
        kwargs["dtype"] = torch.float32
    if configured is not None and configured.revision and role not in spec.upstream:
        kwargs["revision"] = configured.revision
    return source, kwargs


def local_device() -> str:
    """This process's device: its own GPU under a distributed launcher (LOCAL_RANK), else cuda/cpu."""
    if not torch.cuda.is_available():
        return "cpu"
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    torch.cuda.set_device(local_rank)
    return f"cuda:{local_rank}"


def fsdp_enabled(env: Any = None) -> bool:
    """True in a process that accelerate launched with an FSDP config (the trainer shards models)."""
    env = os.environ if env is None else env
    return str(env.get("ACCELERATE_USE_FSDP", "false")).lower() == "true"


def load_model(spec: Any, role: str, trainable: bool = False) -> Any:
    """Load a role's model: `trainable` in fp32 (master weights), else frozen in its configured dtype.

    It goes onto this process's GPU unless a distributed engine places it: under DeepSpeed ZeRO-3
    (once the stage's TRL config exists) `from_pretrained` partitions the weights as it loads, and
    under FSDP the trainer shards the model from where it was loaded."""
    from transformers.integrations import is_deepspeed_zero3_enabled

    source, kwargs = resolve_model(spec, role, trainable)
    model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    if not trainable:
        model.requires_grad_(False)
    if torch.cuda.is_available() and not is_deepspeed_zero3_enabled() and not fsdp_enabled():
        model = model.to(local_device())
    return model


def load_tokenizer(spec: Any, role: str) -> Any:
    source, kwargs = resolve_model(spec, role)
    tok = AutoTokenizer.from_pretrained(
        source, trust_remote_code=kwargs["trust_remote_code"], revision=kwargs.get("revision")
    )
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def save_model(model: Any, tokenizer: Any, out_dir: Path) -> Path:
    target = out_dir / MODEL_DIR
    model.save_pretrained(target, safe_serialization=True)
    tokenizer.save_pretrained(target)
    return target


def save_trained(trainer: Any, tokenizer: Any, out_dir: Path) -> Path:
    """Save a trainer's model as `model/`. Called on every process: with several, the trainer
    gathers FSDP / ZeRO-3 shards collectively and only the main process writes."""
    if trainer.accelerator.num_processes == 1:
        return save_model(trainer.model, tokenizer, out_dir)
    target = out_dir / MODEL_DIR
    trainer.save_model(str(target))
    if trainer.args.should_save:
        tokenizer.save_pretrained(target)
        (target / "training_args.bin").unlink(missing_ok=True)
    trainer.accelerator.wait_for_everyone()
    return target
