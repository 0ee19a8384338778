"""Pre-flight: refuse a teacher/student pair whose tokenizers differ, before any compute is spent.

Token-level distillation compares distributions over one vocabulary, position by position; a pair
that differs in vocabulary, special-token ids or chat template silently trains on garbage. This
compares what matters (vocabulary sizes, the token -> id map, EOS and pad ids, the chat template and
the ids of a probe string) and names every difference with both sides' values. A model named by
path is checked to exist before anything starts (`model_source_problem`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sparse2dense.gguf import gguf_problem, is_gguf


class TokenizerMismatch(ValueError):
    """Teacher and student cannot be distilled token by token."""


# Digits, LaTeX, a boxed answer, non-ASCII and whitespace runs: where tokenizers of one family
# that "look the same" most often differ.
PROBE = "Let's think step by step: 12345 + 0.5 = \\frac{24691}{2}, so \\boxed{12345.5}.\n\t  Ü∑π — 東京 🙂"


def _first_difference(a: list[Any], b: list[Any]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def compare_tokenizers(teacher: Any, student: Any, probe: str = PROBE) -> list[str]:
    """Every difference between two tokenizers that breaks token-level distillation, each named."""
    problems = []
    if len(teacher) != len(student):
        problems.append(
            f"vocabulary size (with added tokens): teacher {len(teacher)}, student {len(student)}"
        )
    if teacher.vocab_size != student.vocab_size:
        problems.append(f"base vocabulary size: teacher {teacher.vocab_size}, student {student.vocab_size}")
    t_vocab, s_vocab = teacher.get_vocab(), student.get_vocab()
    differing = sorted(tok for tok in set(t_vocab) | set(s_vocab) if t_vocab.get(tok) != s_vocab.get(tok))
    if differing:
        example = differing[0]
        problems.append(
            f"{len(differing)} tokens map to different ids, e.g. {example!r}: "
            f"teacher {t_vocab.get(example)}, student {s_vocab.get(example)}"
        )
    for attr in ("eos_token_id", "pad_token_id"):
        if getattr(teacher, attr) != getattr(student, attr):
            token = attr.removesuffix("_id")
            problems.append(
                f"{attr}: teacher {getattr(teacher, attr)} ({getattr(teacher, token)!r}), "
                f"student {getattr(student, attr)} ({getattr(student, token)!r})"
            )
    t_template, s_template = teacher.chat_template, student.chat_template
    if t_template != s_template:
        if t_template is None or s_template is None:
            which = "teacher" if t_template is None else "student"
            problems.append(f"chat templates differ: the {which} has none")
        else:
            at = _first_difference(list(t_template), list(s_template))
            problems.append(
                f"chat templates differ from character {at}: "
                f"teacher {t_template[at : at + 40]!r}, student {s_template[at : at + 40]!r}"
            )
    t_ids = teacher(probe, add_special_tokens=False)["input_ids"]
    s_ids = student(probe, add_special_tokens=False)["input_ids"]
    if t_ids != s_ids:
        at = _first_difference(t_ids, s_ids)
        problems.append(
            f"probe string {probe!r} tokenizes differently from token {at}: "
            f"teacher {t_ids[at : at + 8]} ({len(t_ids)} tokens), student {s_ids[at : at + 8]} ({len(s_ids)} tokens)"
        )
    return problems


def check_tokenizers(teacher: Any, student: Any) -> None:
    if problems := compare_tokenizers(teacher, student):
        raise TokenizerMismatch("teacher and student tokenizers differ: " + "; ".join(problems))


def check_configured_models(teacher_spec: Any, student_spec: Any) -> None:
    """For hub/local models named in the config: compare their tokenizers (no weights loaded).

    Toy models are created by the pipeline from one locally built tokenizer; the bridge stages
    check them again when they start.
    """
    if teacher_spec.name_or_path is None or student_spec.name_or_path is None:
        return
    from transformers import AutoTokenizer

    def load(spec: Any) -> Any:
        if is_gguf(spec.name_or_path):
            path = Path(spec.name_or_path).expanduser()
            return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        return AutoTokenizer.from_pretrained(
            spec.name_or_path, revision=spec.revision, trust_remote_code=spec.trust_remote_code
        )

    if is_gguf(teacher_spec.name_or_path) and teacher_spec.name_or_path == student_spec.name_or_path:
        return  # one file: one tokenizer

    check_tokenizers(load(teacher_spec), load(student_spec))


def model_source_problem(name_or_path: str) -> str | None:
    """Why `name_or_path` names no model this machine can load, or None: an existing directory
    needs a config.json, a `.gguf` file a GGUF header; a path that does not exist is named as such (before any server starts);
    a hub id is checked against the local cache only when HF_HUB_OFFLINE is set."""
    path = Path(name_or_path).expanduser()
    if is_gguf(name_or_path):
        return gguf_problem(path)
    if path.exists():
        if not path.is_dir():
            return f"model path {name_or_path} is a file, not a model directory"
        if not (path / "config.json").is_file():
            return f"model directory {name_or_path} has no config.json (not a saved transformers model)"
        return None
    if name_or_path.startswith(("/", "./", "../", "~")) or name_or_path.count("/") > 1:
        return f"model path not found: {name_or_path}"
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        from huggingface_hub import try_to_load_from_cache
        from huggingface_hub.errors import HFValidationError

        try:
            cached = try_to_load_from_cache(name_or_path, "config.json")
        except HFValidationError:
            return f"model {name_or_path!r}: not a local directory and not a valid hub id"
        if not isinstance(cached, str):
            return (
                f"model {name_or_path!r}: not a local directory, and not in the local hub cache "
                "(HF_HUB_OFFLINE is set, so it cannot be downloaded)"
            )
    return None
