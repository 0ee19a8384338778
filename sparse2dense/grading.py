"""The one grading function: it scores both the GRPO reward and the evaluation, so they never drift.

Last `\\boxed{}` (or `\\fbox{}`) with nested braces -> normalized string match (fast path, never
reaches sympy) -> numeric match -> cheap guards (size, nesting depth, exponent magnitude, numeric
power towers) -> symbolic equivalence through math-verify (sympy). Only that last step leaves this
module: `grader_pool` runs it in worker processes under a hard wall-clock limit, so a call from any
thread returns a verdict (correct, wrong, no_answer, timeout, error) with its reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from fractions import Fraction

from sparse2dense.grader_pool import get_pool

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
_BARE_RE = re.compile(r"[^\s$]+")
_BRACE_RE = re.compile(r"[{}]")


def _closing_braces(text: str, start: int) -> dict[int, int]:
    """Position of each `{` (from `start` on) -> its matching `}`; unmatched ones are absent."""
    closing, stack = {}, []
    for match in _BRACE_RE.finditer(text, start):
        if match.group() == "{":
            stack.append(match.start())
        elif stack:
            closing[stack.pop()] = match.start()
    return closing


def extract_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}`/`\\fbox{...}` (nested braces kept), or `\\boxed 7` form.

    One brace-matching pass serves every candidate box, so a megabyte of unbalanced `\\boxed{`
    stays linear instead of rescanning the tail once per box.
    """
    matches = list(_BOX_RE.finditer(text))
    closing: dict[int, int] | None = None
    for match in reversed(matches):
        start = match.end()
        if start < len(text) and text[start] == "{":
            if closing is None:
                closing = _closing_braces(text, matches[0].end())
            end = closing.get(start)
            if end is None:
                continue  # unbalanced: try an earlier box
            return text[start + 1 : end]
        bare = _BARE_RE.match(text, start)
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


def _braces_balanced(s: str) -> bool:
    depth = 0
    for ch in _BRACE_RE.findall(s):
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
    outcome = get_pool().check(gold_n, pred_n)
    return Grade(Verdict(outcome.verdict), outcome.reason, pred)


def grade_completion(gold: str, completion: str) -> Grade:
    """Grade a full model completion: extract the last boxed answer, then compare."""
    return grade_answer(gold, extract_boxed(completion))


def correctness_reward(completions: list, answer: list[str], **_: object) -> list[float]:
    """TRL reward function: 1.0 for a correct final boxed answer, else 0.0."""
    texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
    return [1.0 if grade_completion(g, t).correct else 0.0 for g, t in zip(answer, texts, strict=True)]
