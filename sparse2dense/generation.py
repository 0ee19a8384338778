"""Generation behind one interface: `generate(model, tokenizer, prompts, sampling)`.

The transformers backend (`model.generate`) serves CPU runs and tests; it samples `n` completions
per prompt in left-padded batches and reports progress with an ETA. Every result carries the backend
name and version and the sampling parameters, so eval records say exactly how they were produced.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class SamplingParams:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 256
    seed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Completion:
    text: str
    token_ids: list[int]
    finish_reason: str  # "stop" (EOS reached) or "length" (truncated)


def backend_info(backend: str = "transformers") -> dict[str, str]:
    if backend == "vllm":
        import vllm

        return {"backend": "vllm", "version": vllm.__version__}
    import transformers

    return {"backend": "transformers", "version": transformers.__version__}


def resolve_backend(requested: str) -> str:
    """The backend to use. vLLM is not wired in yet, so `auto` means transformers and an explicit
    `vllm` request is refused with the reason, rather than failing mid-stage."""
    if requested in ("auto", "transformers"):
        return "transformers"
    try:
        import vllm  # noqa: F401
    except ImportError:
        raise RuntimeError(
            "eval.backend is 'vllm' but vllm is not installed (pip install 'sparse2dense[vllm]')"
        ) from None
    raise NotImplementedError("the vLLM generation backend is not available in this build")


def log_progress(label: str, done: int, total: int, started: float) -> None:
    elapsed = time.monotonic() - started
    eta = elapsed / done * (total - done) if done else float("nan")
    print(f"[{label}] {done}/{total} elapsed {elapsed:.0f}s eta {eta:.0f}s", flush=True)


@torch.no_grad()
def generate(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    sampling: SamplingParams,
    batch_size: int = 32,
    label: str = "generate",
) -> list[list[Completion]]:
    """`sampling.n` completions for each prompt, in prompt order."""
    model.eval()
    tokenizer.padding_side = "left"
    eos_ids = model.generation_config.eos_token_id
    eos_ids = set(eos_ids if isinstance(eos_ids, list) else [eos_ids])
    torch.manual_seed(sampling.seed)
    out: list[list[Completion]] = []
    started = time.monotonic()
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start : start + batch_size]
        enc = tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        do_sample = sampling.temperature > 0
        kwargs: dict[str, Any] = {"do_sample": do_sample, "max_new_tokens": sampling.max_new_tokens}
        if do_sample:
            kwargs |= {"temperature": sampling.temperature, "top_p": sampling.top_p, "top_k": sampling.top_k}
        seqs = model.generate(
            **enc,
            num_return_sequences=sampling.n,
            pad_token_id=tokenizer.pad_token_id,
            **kwargs,
        )
        new = seqs[:, enc["input_ids"].shape[1] :].tolist()
        for i in range(len(batch)):
            group = []
            for ids in new[i * sampling.n : (i + 1) * sampling.n]:
                stop = next((j for j, t in enumerate(ids) if t in eos_ids), None)
                kept = ids if stop is None else ids[: stop + 1]
                text = tokenizer.decode(kept, skip_special_tokens=True)
                group.append(Completion(text, kept, "length" if stop is None else "stop"))
            out.append(group)
        log_progress(label, min(start + batch_size, len(prompts)), len(prompts), started)
    return out
