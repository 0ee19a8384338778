"""The one grading function: it scores both the GRPO reward and the evaluation, so they never drift.

The answer (`answer_extraction`): a completion's last `\\boxed{}` (or `\\fbox{}`), or its final boxes
together; `grade`, for outputs that may carry no box, also reads what prose states. Then, with both
answers normalized (`answer_normalization`): string match (fast path, never reaches sympy) ->
numeric match -> cheap guards (size, nesting depth, exponent magnitude, numeric power towers) ->
symbolic equivalence through math-verify (sympy). Only that last step leaves the process:
`grader_pool` runs it in worker processes under a hard wall-clock limit, so a call from any thread
returns a verdict (correct, wrong, no_answer, timeout, error) with its reason. `Grade.symbolic` says
whether an answer got that far.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from fractions import Fraction

from sparse2dense.answer_extraction import answer_candidates, boxed_answers, extract_boxed
from sparse2dense.answer_normalization import (
    align_forms,
    as_number,
    decimal_comma_twin,
    list_against_number,
    normalize_answer,
    numbers_match,
)
from sparse2dense.grader_pool import get_pool

__all__ = [
    "Grade",
    "Verdict",
    "REWARDS",
    "correctness_reward",
    "grade_output",
    "stated_correctness_reward",
    "extract_boxed",
    "grade",
    "grade_answer",
    "grade_completion",
    "normalize_answer",
]

MAX_ANSWER_CHARS = 512
MAX_RAW_ANSWER_CHARS = 8 * MAX_ANSWER_CHARS  # longer is refused before normalization's regexes run
MAX_NESTING = 40
MAX_EXPONENT_DIGITS = 3
_BIG_EXPONENT_RE = re.compile(r"\^\s*\{?\s*\d{" + str(MAX_EXPONENT_DIGITS + 1) + ",}")


class Verdict(StrEnum):
    CORRECT = "correct"
    WRONG = "wrong"
    NO_ANSWER = "no_answer"
    TIMEOUT = "timeout"
    ERROR = "error"


@dataclass(frozen=True)
class Grade:
    """A verdict, why, the answer graded, and whether the sympy workers were consulted."""

    verdict: Verdict
    reason: str
    pred: str | None
    symbolic: bool = False

    @property
    def correct(self) -> bool:
        return self.verdict is Verdict.CORRECT


def _numbers(gold: str, pred: str) -> tuple[Fraction, Fraction] | None:
    """Both answers' exact values when both are plain numbers."""
    gold_v, pred_v = as_number(gold), as_number(pred)
    return None if gold_v is None or pred_v is None else (gold_v, pred_v)


def _braces_balanced(s: str) -> bool:
    depth = 0
    for ch in re.findall(r"[{}]", s):
        depth += 1 if ch == "{" else -1
        if depth < 0:
            return False
    return depth == 0


def _guard(s: str) -> str | None:
    """Why an answer is too risky for sympy, or None."""
    if len(s) > MAX_ANSWER_CHARS:
        return f"answer longer than {MAX_ANSWER_CHARS} chars"
    if not _braces_balanced(s):
        # math-verify would fall back to picking a number out of the fragment (`1 + {2` "equals" 1).
        return "unbalanced braces"
    depth = peak = 0
    for ch in s:
        depth += ch in "{(["
        depth -= ch in "})]"
        peak = max(peak, depth)
    if peak > MAX_NESTING:
        return f"nesting deeper than {MAX_NESTING}"
    if _BIG_EXPONENT_RE.search(s) or s.count("^") > 3:
        return "exponent too large"
    if _has_power_tower(s):
        return "nested exponent (power tower)"
    return None


_ARITH_COMMANDS_RE = re.compile(r"\\(?:cdot|times|frac|sqrt|left|right)")


def _is_numeric(group: str) -> bool:
    return not re.search(r"[A-Za-z]", _ARITH_COMMANDS_RE.sub("", group))


def _group_before(s: str, end: int) -> tuple[str, int] | None:
    """The bracketed group closing just before `end` (`(...)`, `{...}`, `[...]`) and where it opens."""
    i = end - 1
    while i >= 0 and s[i] == " ":
        i -= 1
    if i < 0 or s[i] not in ")}]":
        return None
    depth = 0
    for j in range(i, -1, -1):
        depth += s[j] in ")}]"
        depth -= s[j] in "({["
        if depth == 0:
            return s[j + 1 : i], j
    return None


def _group_after(s: str, start: int) -> str | None:
    """The `{...}` exponent starting at `start` (spaces skipped), or None."""
    rest = s[start:].lstrip()
    if not rest.startswith("{"):
        return None
    depth = 0
    for i, ch in enumerate(rest):
        depth += ch == "{"
        depth -= ch == "}"
        if depth == 0:
            return rest[1:i]
    return None


def _has_power_tower(s: str) -> bool:
    """True if a numeric power is raised to a power again: `9^{9^{9}}`, `9^9^9`, `(999^{999})^{999}`,
    or superscripts are chained (`2^{999}^{999}`, a TeX error that the parser reads as a tower).

    Those outgrow any sympy budget; symbolic towers such as `e^{-x^{2}}` are legitimate answers and
    go to the worker, whose wall-clock limit bounds them.
    """
    for match in re.finditer(r"\^", s):
        exponent = _group_after(s, match.end())
        before = _group_before(s, match.start())
        base = before[0] if before else None
        if before and s[before[1]] == "{" and s[: before[1]].rstrip().endswith("^"):
            return True
        for group in (exponent, base):
            if group is not None and ("^" in group or "**" in group) and _is_numeric(group):
                return True
        if exponent is None and re.match(r"\s*[\d.]+\s*(\^|\*\*)\s*\{?\s*[\d.]", s[match.end() :]):
            return True  # 9^9^9 parses right-associatively as a tower
    return False


def _settle_cheaply(gold: str, pred: str, gold_n: str, pred_n: str) -> tuple[Verdict, str] | None:
    """A verdict from the normalized strings alone, or None when sympy has to decide."""
    if gold_n == pred_n:
        return Verdict.CORRECT, "normalized string match"
    if gold_n.count("'") != pred_n.count("'"):
        return Verdict.WRONG, "prime marks differ"
    if decimal_comma_twin(gold, gold_n, pred_n) or decimal_comma_twin(pred, pred_n, gold_n):
        return Verdict.CORRECT, "numeric comparison"
    if values := _numbers(gold_n, pred_n):
        ok = numbers_match(*values, gold_n, pred_n)
        return (Verdict.CORRECT if ok else Verdict.WRONG), "numeric comparison"
    if list_against_number(gold_n, pred_n):
        return Verdict.WRONG, "a list against a single number"
    if reason := _guard(pred_n):
        return Verdict.WRONG, f"guarded: {reason}"
    return None


def grade_answer(gold: str, pred: str | None) -> Grade:
    """Compare an extracted answer with the reference answer."""
    if pred is None or not pred.strip():
        return Grade(Verdict.NO_ANSWER, "no boxed answer", pred)
    if len(pred) > MAX_RAW_ANSWER_CHARS:
        return Grade(Verdict.WRONG, f"guarded: answer longer than {MAX_RAW_ANSWER_CHARS} chars", pred)
    gold_n, pred_n = align_forms(normalize_answer(gold), normalize_answer(pred))
    if settled := _settle_cheaply(gold, pred, gold_n, pred_n):
        return Grade(*settled, pred)
    outcome = get_pool().check(gold_n, pred_n)
    return Grade(Verdict(outcome.verdict), outcome.reason, pred, symbolic=True)


def _first_correct(gold: str, candidates: list[str]) -> Grade:
    """The grade of the first candidate answer that is correct, else of the first candidate.

    Candidates are readings of one output: the last box, the final boxes together, a final-answer
    statement written after them.
    """
    grades = []
    for candidate in candidates:
        grades.append(grade_answer(gold, candidate))
        if grades[-1].correct:
            return grades[-1]
    return grades[0] if grades else grade_answer(gold, None)


def grade_completion(gold: str, completion: str) -> Grade:
    """Grade a full model completion by its boxes: the last one, or the final ones together."""
    return _first_correct(gold, boxed_answers(completion))


def grade(gold: str, pred: str) -> Grade:
    """Grade a completion or a bare answer by what it states (`answer_extraction.answer_candidates`).

    An unbalanced box is a completion without an answer (no_answer), not an answer to parse.
    """
    return _first_correct(gold, answer_candidates(pred))


def grade_output(gold: str, text: str, answer_format: str = "boxed") -> Grade:
    """A model output's grade under a config's answer format: `boxed` reads its final boxes only
    (the paper's reward), `stated` also the value its final sentence states (a small model that
    answers in prose)."""
    return grade_completion(gold, text) if answer_format == "boxed" else grade(gold, text)


def _texts(completions: list) -> list[str]:
    return [c if isinstance(c, str) else c[-1]["content"] for c in completions]


def correctness_reward(completions: list, answer: list[str], **_: object) -> list[float]:
    """TRL reward function: 1.0 for a correct final boxed answer, else 0.0."""
    return [
        1.0 if grade_completion(g, t).correct else 0.0
        for g, t in zip(answer, _texts(completions), strict=True)
    ]


def stated_correctness_reward(completions: list, answer: list[str], **_: object) -> list[float]:
    """TRL reward function: 1.0 for a correct final box or stated final answer, else 0.0."""
    return [1.0 if grade(g, t).correct else 0.0 for g, t in zip(answer, _texts(completions), strict=True)]


REWARDS = {"boxed": correctness_reward, "stated": stated_correctness_reward}
