"""The one grading function: it scores both the GRPO reward and the evaluation, so they never drift.

Last `\\boxed{}` (or `\\fbox{}`) with nested braces -> normalized string match (fast path, never
reaches sympy) -> numeric match -> symbolic equivalence through math-verify (sympy), behind cheap
guards (size, nesting depth, exponent magnitude) that turn pathological answers into fast verdicts.
math-verify is called with its signal-based timeouts off, because those raise off the main thread
(Prefect and TRL call rewards from threads).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from enum import StrEnum
from fractions import Fraction
from functools import lru_cache

# math-verify warns on every call that its (signal-based) timeouts are off; they are off on purpose.
logging.getLogger("math_verify").setLevel(logging.ERROR)

MAX_ANSWER_CHARS = 512
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
    verdict: Verdict
    reason: str
    pred: str | None

    @property
    def correct(self) -> bool:
        return self.verdict is Verdict.CORRECT


_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*")


def extract_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}`/`\\fbox{...}` (nested braces kept), or `\\boxed 7` form."""
    matches = list(_BOX_RE.finditer(text))
    for match in reversed(matches):
        start = match.end()
        if start < len(text) and text[start] == "{":
            depth = 0
            for i in range(start, len(text)):
                if text[i] == "{":
                    depth += 1
                elif text[i] == "}":
                    depth -= 1
                    if depth == 0:
                        return text[start + 1 : i]
            continue  # unbalanced: try an earlier box
        bare = re.match(r"[^\s$]+", text[start:])
        if bare:
            return bare.group(0)
    return None


_STRIP_COMMANDS = [r"\left", r"\right", r"\!", r"\,", r"\;", r"\:", r"\displaystyle", "$"]


def normalize_answer(answer: str) -> str:
    """A canonical string: spacing, `\\dfrac`, `\\text{}`, degrees, trailing dots removed."""
    s = answer.strip()
    for cmd in _STRIP_COMMANDS:
        s = s.replace(cmd, "")
    s = re.sub(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}", r"\1", s)
    s = s.replace(r"\dfrac", r"\frac").replace(r"\tfrac", r"\frac")
    s = s.replace("^\\circ", "").replace("^{\\circ}", "").replace("°", "")
    s = re.sub(r"\s+", "", s)
    s = s.rstrip(".")
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", s):
        s = s.replace(",", "")
    return s


def _as_number(s: str) -> Fraction | None:
    frac = re.fullmatch(r"(-?)\\frac\{(-?\d+)\}\{(-?\d+)\}", s)
    try:
        if frac:
            value = Fraction(int(frac.group(2)), int(frac.group(3)))
            return -value if frac.group(1) else value
        if re.fullmatch(r"-?\d+(\.\d+)?(/\d+)?", s):
            return Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None
    return None


def _guard(s: str) -> str | None:
    """Why an answer is too risky for sympy, or None."""
    if len(s) > MAX_ANSWER_CHARS:
        return f"answer longer than {MAX_ANSWER_CHARS} chars"
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


def _has_power_tower(s: str) -> bool:
    """True if an exponent itself contains an exponent: `9^{9^{9}}` grows beyond any sympy budget."""
    for match in re.finditer(r"\^", s):
        rest = s[match.end() :].lstrip()
        if rest.startswith("{"):
            depth = 0
            for i, ch in enumerate(rest):
                depth += ch == "{"
                depth -= ch == "}"
                if depth == 0:
                    if "^" in rest[:i] or "**" in rest[:i]:
                        return True
                    break
        elif re.match(r"[\w.]+\s*(\^|\*\*)", rest):
            return True  # 9^9^9 parses right-associatively as a tower
    return False


def _symbolic_equal(gold: str, pred: str) -> bool:
    from math_verify import parse, verify

    gold_parsed = parse(f"${gold}$", parsing_timeout=None)
    pred_parsed = parse(f"${pred}$", parsing_timeout=None)
    if not gold_parsed or not pred_parsed:
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))


@lru_cache(maxsize=65536)
def grade_answer(gold: str, pred: str | None) -> Grade:
    """Compare an extracted answer with the reference answer."""
    if pred is None or not pred.strip():
        return Grade(Verdict.NO_ANSWER, "no boxed answer", pred)
    gold_n, pred_n = normalize_answer(gold), normalize_answer(pred)
    if gold_n == pred_n:
        return Grade(Verdict.CORRECT, "normalized string match", pred)
    gold_v, pred_v = _as_number(gold_n), _as_number(pred_n)
    if gold_v is not None and pred_v is not None:
        ok = gold_v == pred_v
        return Grade(Verdict.CORRECT if ok else Verdict.WRONG, "numeric comparison", pred)
    if reason := _guard(pred_n):
        return Grade(Verdict.WRONG, f"guarded: {reason}", pred)
    try:
        ok = _symbolic_equal(gold_n, pred_n)
    except Exception as err:  # noqa: BLE001 - any parser failure is a verdict, not a crash
        return Grade(Verdict.ERROR, f"symbolic check failed: {type(err).__name__}", pred)
    return Grade(Verdict.CORRECT if ok else Verdict.WRONG, "symbolic equivalence", pred)


def grade_completion(gold: str, completion: str) -> Grade:
    """Grade a full model completion: extract the last boxed answer, then compare."""
    return grade_answer(gold, extract_boxed(completion))


def correctness_reward(completions: list, answer: list[str], **_: object) -> list[float]:
    """TRL reward function: 1.0 for a correct final boxed answer, else 0.0."""
    texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
    return [1.0 if grade_completion(g, t).correct else 0.0 for g, t in zip(answer, texts, strict=True)]
