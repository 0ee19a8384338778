"""Models from a local GGUF file, converted once into an ordinary safetensors model folder.

transformers reads a `.gguf` file (`from_pretrained(folder, gguf_file=name)` with the `gguf`
package), but it dequantises every tensor on each load and marks the model quantized, so such a model
cannot be saved, trained by TRL, served by vLLM or registered. A `name_or_path` that names a `.gguf`
file is therefore converted once into `<store>/models/gguf-<sha256>/` (fp32 safetensors, its tokenizer
and chat template), keyed by the file's content: a changed file is a new model, and every stage reads
the same folder. The conversion holds a lock and renames a finished folder into place, so stages
that start together convert once and none reads a half-written model.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

from sparse2dense.store import sha256_file

SUFFIX = ".gguf"
MAGIC = b"GGUF"
MODELS_DIR = "models"
SOURCE_FILE = "gguf_source.json"  # written last: a folder without it is not a finished conversion


class GGUFError(ValueError):
    """A `.gguf` model file that is missing, not GGUF, damaged or not the pinned one."""


def is_gguf(name_or_path: str | None) -> bool:
    return name_or_path is not None and name_or_path.lower().endswith(SUFFIX)


def gguf_problem(path: Path) -> str | None:
    """Why `path` is not a GGUF file this machine can read, or None (the header only, no weights)."""
    if not path.exists():
        return f"model file not found: {path}"
    if not path.is_file():
        return f"model path {path} ends in {SUFFIX} but is not a file"
    with open(path, "rb") as fh:
        magic = fh.read(len(MAGIC))
    if magic != MAGIC:
        return f"model file {path} is not a GGUF file (it starts with {magic!r}, not {MAGIC!r})"
    return None


@lru_cache(maxsize=16)
def _digest(resolved: str, size: int, mtime_ns: int) -> str:
    return sha256_file(Path(resolved))


def file_digest(path: Path) -> str:
    """sha256 of a model file, read once per process for an unchanged file (size and mtime)."""
    stat = path.stat()
    return _digest(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


def converted_dir(store: Path, digest: str) -> Path:
    return store / MODELS_DIR / f"gguf-{digest}"


def is_converted(folder: Path) -> bool:
    return (folder / SOURCE_FILE).is_file()


def convert_gguf(path: Path, store: Path, expected_digest: str | None = None) -> Path:
    """The safetensors model folder of a GGUF file, converting it on first use.

    `expected_digest` is the digest the run was planned with: a file replaced since then is refused
    rather than trained under the old key."""
    if problem := gguf_problem(path):
        raise GGUFError(problem)
    digest = file_digest(path)
    if expected_digest is not None and digest != expected_digest:
        raise GGUFError(
            f"model file {path} changed since the run was planned: sha256 {digest}, "
            f"planned {expected_digest}; start the run again"
        )
    target = converted_dir(store, digest)
    if is_converted(target):
        return target
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if is_converted(target):
            return target
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        try:
            _convert(path, staging)
            (staging / SOURCE_FILE).write_text(
                json.dumps({"file": path.name, "sha256": digest, "size": path.stat().st_size}, indent=1)
            )
            shutil.rmtree(target, ignore_errors=True)  # an unfinished folder of a crashed conversion
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _convert(path: Path, out_dir: Path) -> None:
    """Load the GGUF (dequantised to fp32), rebuild it as a plain model, save it with its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        loaded = AutoModelForCausalLM.from_pretrained(
            str(path.parent), gguf_file=path.name, dtype=torch.float32
        )
    except (ValueError, KeyError, OSError, EOFError, RuntimeError, IndexError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise GGUFError(f"model file {path} could not be read as a GGUF model: {first[:300]}") from None
    config = loaded.config
    # The quantizer marker is what makes transformers refuse to save; the weights are already plain.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.generation_config = loaded.generation_config
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
