"""Generation behind one interface: `generate(model, tokenizer, prompts, sampling)`, or, for a stage
that should not care which engine runs, `open_generator(...)(prompts, sampling, label)`.

Two backends return the same `Completion` groups. transformers (`model.generate`) serves CPU runs
and tests; it samples `n` completions per prompt in left-padded batches and reports progress with an
ETA. vLLM (`vllm.LLM`, continuous batching, tensor parallel) serves GPU runs; `auto` picks it when
vllm is importable and CUDA is available. Prompts go to both as the same token ids (rendered by the
one prompt renderer, no special tokens added), so a template's BOS is never doubled. Every result
carries the backend name and version and the sampling parameters, so eval records say exactly how
they were produced. vLLM gets one seed per prompt (`request_seeds`), derived from the call's seed and
the prompt's index: one seed for every request would draw the same random numbers for every
problem of a shard and correlate their samples.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch

from sparse2dense.progress import progress_line
from sparse2dense.prompts import encode_prompt


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

    @classmethod
    def from_section(cls, section: Any, n: int, seed: int) -> SamplingParams:
        """From a config section with temperature, top_p, top_k and max_new_tokens (eval, rollouts)."""
        return cls(
            n=n,
            temperature=section.temperature,
            top_p=section.top_p,
            top_k=section.top_k,
            max_new_tokens=section.max_new_tokens,
            seed=seed,
        )


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


def vllm_importable() -> bool:
    try:
        import vllm  # noqa: F401
    except ImportError:
        return False
    return True


def cuda_available() -> bool:
    return torch.cuda.is_available()


def resolve_backend(requested: str) -> str:
    """The backend to use: `auto` is vLLM when it is installed and a GPU is there, else
    transformers; an explicit `vllm` without vllm installed is refused before any model loads."""
    if requested == "transformers":
        return "transformers"
    if requested == "auto":
        return "vllm" if vllm_importable() and cuda_available() else "transformers"
    if requested != "vllm":
        raise ValueError(f"unknown generation backend {requested!r} (auto, transformers, vllm)")
    if not vllm_importable():
        raise RuntimeError("backend is 'vllm' but vllm is not installed (pip install 'sparse2dense[vllm]')")
    return "vllm"


def request_seeds(seed: int, count: int) -> list[int]:
    """The sampling seed of each of `count` prompts generated with `seed` (a shard's seed): the first
    63 bits of sha256("seed:index"), so prompts get unrelated streams, the same prompt index always
    the same one, and neighbouring shard seeds (seed + i) never share a stream by arithmetic."""
    return [
        int.from_bytes(hashlib.sha256(f"{seed}:{index}".encode()).digest()[:8], "big") >> 1
        for index in range(count)
    ]


def vllm_sampling_params(sampling: SamplingParams) -> Any:
    """Our sampling parameters as vLLM's (`top_k` 0 means no limit, as in transformers)."""
    from vllm import SamplingParams as VLLMSamplingParams

    kwargs: dict[str, Any] = {
        "n": sampling.n,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "max_tokens": sampling.max_new_tokens,
        "seed": sampling.seed,
    }
    if sampling.top_k > 0:
        kwargs["top_k"] = sampling.top_k
    return VLLMSamplingParams(**kwargs)


class VLLMGenerator:
    """A model served by `vllm.LLM` in this process; `__call__` matches the transformers path."""

    def __init__(
        self,
        model: str,
        tokenizer: Any,
        *,
        dtype: str = "auto",
        trust_remote_code: bool = False,
        revision: str | None = None,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        seed: int = 0,
    ) -> None:
        from vllm import LLM

        self.tokenizer = tokenizer
        self.llm = LLM(
            model=model,
            dtype=dtype,
            trust_remote_code=trust_remote_code,
            revision=revision,
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            seed=seed,
        )

    def __call__(
        self, prompts: list[str], sampling: SamplingParams, label: str = "generate"
    ) -> list[list[Completion]]:
        started = time.monotonic()
        requests = [{"prompt_token_ids": encode_prompt(self.tokenizer, p)} for p in prompts]
        per_request = [
            vllm_sampling_params(dataclasses.replace(sampling, seed=seed))
            for seed in request_seeds(sampling.seed, len(prompts))
        ]
        outputs = self.llm.generate(requests, per_request, use_tqdm=False)
        groups = [
            [
                Completion(
                    text=c.text,
                    token_ids=list(c.token_ids),
                    finish_reason="length" if c.finish_reason == "length" else "stop",
                )
                for c in out.outputs
            ]
            for out in outputs
        ]
        log_progress(label, len(prompts), len(prompts), started)
        return groups


def open_generator(
    spec: Any,
    role: str,
    tokenizer: Any,
    backend: str,
    *,
    batch_size: int = 32,
    tensor_parallel_size: int = 1,
    gpu_memory_utilization: float = 0.9,
) -> Callable[..., list[list[Completion]]]:
    """A `(prompts, sampling, label) -> groups` callable for a stage spec's model role on `backend`
    (already resolved). The transformers backend loads the model into this process; vLLM loads it
    itself from the same path, dtype and revision."""
    from sparse2dense.models import load_model, resolve_model

    if backend == "vllm":
        source, kwargs = resolve_model(spec, role)
        dtype = kwargs.get("dtype")
        return VLLMGenerator(
            source,
            tokenizer,
            dtype=str(dtype).removeprefix("torch.") if dtype is not None else "auto",
            trust_remote_code=kwargs["trust_remote_code"],
            revision=kwargs.get("revision"),
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            seed=spec.seed,
        )
    model = load_model(spec, role)

    def run(prompts: list[str], sampling: SamplingParams, label: str = "generate") -> list[list[Completion]]:
        return generate(model, tokenizer, prompts, sampling, batch_size, label=label)

    return run


def log_progress(label: str, done: int, total: int, started: float) -> None:
    print(progress_line(label, done, total, time.monotonic() - started), flush=True)


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
