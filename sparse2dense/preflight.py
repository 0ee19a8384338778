"""Pre-flight: refuse a teacher/student pair whose tokenizers differ, before any compute is spent.

Token-level distillation compares distributions over one vocabulary, position by position; a pair
that differs in vocabulary, special-token ids or chat template silently trains on garbage. This
compares what matters and names every difference.
"""

from __future__ import annotations

from typing import Any


class TokenizerMismatch(ValueError):
    """Teacher and student cannot be distilled token by token."""


def compare_tokenizers(teacher: Any, student: Any) -> list[str]:
    problems = []
    if len(teacher) != len(student):
        problems.append(f"vocabulary size: teacher {len(teacher)}, student {len(student)}")
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
            problems.append(f"{attr}: teacher {getattr(teacher, attr)}, student {getattr(student, attr)}")
    if teacher.chat_template != student.chat_template:
        problems.append("chat templates differ")
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
        return AutoTokenizer.from_pretrained(
            spec.name_or_path, revision=spec.revision, trust_remote_code=spec.trust_remote_code
        )

    check_tokenizers(load(teacher_spec), load(student_spec))
