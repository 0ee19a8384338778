"""The canonical string an answer normalizes to, and the cheap comparisons that need no sympy.

Covers the notations graders disagree on: spacing and sizing commands, `\\dfrac`, text styling and
case, units after a value, currency, percent words, degrees, digit-group separators (`1,000`,
`10{,}000`, `10,\\!000`), mixed numbers, number words, bare exponents (`2^10`, `x**2`), relation
macros, matrix environments, and `and` between list items. `align_forms` then reconciles two
answers written in different shapes (`x = 5` against `5`, `2 \\le x < 5` against `[2, 5)`), and
`as_number`/`numbers_match` compare plain numbers exactly. Plain string work: nothing here reaches
sympy.
"""

from __future__ import annotations

import re
from fractions import Fraction

_STRIP_COMMANDS = [r"\left", r"\right", r"\!", r"\,", r"\;", r"\:", r"\displaystyle", "$"]
_STYLE_COMMANDS = (
    "text|textbf|textit|textrm|textsf|textnormal|mathrm|mathbf|mathit|mathsf|mathcal|mathbb|mbox|boldsymbol"
)
_TEXT_COMMANDS = "text|textbf|textit|textrm|textsf|textnormal|mbox"
_UNIT_WORDS = (
    r"(?:square |sq\.? |cubic )?(?:units?|cm|mm|km|meters?|metres?|centimeters?|kilometers?|inch(?:es)?"
    r"|feet|foot|ft|yards?|yd|miles?|grams?|kg|pounds?|lbs?|ounces?|oz|liters?|litres?|ml|seconds?"
    r"|minutes?|hours?|hrs?|days?|weeks?|months?|years?|cents?|dollars?|degrees?|mph|yuan|euros?)"
    r"(?:\^\{?[23]\}?|[²³])?"
)
_ONES = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
)
_TENS = ("thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_NUMBER_WORDS = {word: str(n) for n, word in enumerate(_ONES)}
_NUMBER_WORDS |= {word: str(10 * n) for n, word in enumerate(_TENS, 3)}

_DIGIT_GROUP_RE = re.compile(r"(?<=\d)(?:\{,\}|,\\!\s*)(?=\d)")
# `(?<!\s)`: a suffix that starts inside a run of spaces also starts at the run's first space, and
# searched from every space of a long run the pattern would rescan the rest of it each time.
_UNIT_SUFFIXES = [
    re.compile(rf"(?<!\s)\s*\\(?:{_TEXT_COMMANDS})\{{\s*[A-Za-z][A-Za-z\s.]*\}}\s*(?:\^\{{?[23]\}}?|[²³])?$"),
    re.compile(rf"(?<!\s)(?:\s+{_UNIT_WORDS}|\s*(?:[ckm]?m|in|ft)[²³])\.?$"),
]
_PERCENT_RE = re.compile(r"(?<=\d)\s*(?:\\%|%|percent(?:age)?|pct)(?![A-Za-z])")
_MIXED_NUMBER_RE = re.compile(r"(-?)(\d+)\s+(\d+)/(\d+)")
_THOUSANDS_RE = re.compile(r"-?[1-9]\d{0,2}(?:,\d{3})+(?:\.\d+)?")
_AND_RE = re.compile(r"\\text\{\s*(?:and|or)\s*\}|(?<=[\w)\]}])(?:\s*,)?\s+and\s+(?=[-\w(\[\\])")
_SPACE_RE = re.compile(r"(\\[A-Za-z]+)\s+(?=[A-Za-z])|\s+")
_REWRITES = [
    (r"\\[dtc]frac", r"\\frac"),
    (r"\^\s*\\circ|\^\s*\{\s*\\circ\s*\}|°", ""),
    (r"\*\*", "^"),
    (r"\^\s*(-?\d+(?:\.\d+)?)", r"^{\1}"),
    (r"\\leq(?:slant)?(?![A-Za-z])|\\le(?![A-Za-z])|<=", r"\\le "),
    (r"\\geq(?:slant)?(?![A-Za-z])|\\ge(?![A-Za-z])|>=", r"\\ge "),
    (r"\\neq(?![A-Za-z])|\\ne(?![A-Za-z])|!=", r"\\neq "),
    (r"\\lt(?![A-Za-z])", "<"),
    (r"\\gt(?![A-Za-z])", ">"),
    (r"\\begin\{(?:[bBvV]?matrix|array)\}(?:\{[^{}]*\})?", r"\\begin{pmatrix}"),
    (r"\\end\{(?:[bBvV]?matrix|array)\}", r"\\end{pmatrix}"),
    (r"\\\\\s*\\end\{pmatrix\}", r"\\end{pmatrix}"),
    (r"(?s)^[\[(]\s*(\\begin\{pmatrix\}.*\\end\{pmatrix\})\s*[\])]$", r"\1"),
    (r"(?<!\\)\\ ", " "),
]


def _drop_units(s: str) -> str:
    """`15\\mbox{ cm}^2`, `125 miles`, `\\$10`, `1,000.99€` -> the value alone (a digit must precede)."""
    s = re.sub(r"\\\$|[€£¥]", "", s).strip()
    for suffix in _UNIT_SUFFIXES:
        if (match := suffix.search(s)) and re.search(r"\d", s[: match.start()]):
            s = s[: match.start()].strip()
    return s


def _list_separators(s: str) -> str:
    """`6 \\text{ and } 8`, `19, 46, and 82`, `\\quad` between items -> comma-separated items."""
    s = re.sub(r"\\q?quad", " ", _AND_RE.sub(",", s))
    return re.sub(r"(?<!\s)\s*(?:,\s*)+", ",", s) if re.search(r",\s*,", s) else s


def _unwrap_styles(s: str) -> str:
    """`\\text{odd}`, `\\mathcal{B}`, `\\textbf{A}` -> their content."""
    return re.sub(rf"\\(?:{_STYLE_COMMANDS})\{{([^{{}}]*)\}}", r"\1", s)


def _mixed_number(s: str) -> str:
    """`3128 1/2` -> `6257/2` (a space between an integer and a fraction)."""
    match = _MIXED_NUMBER_RE.fullmatch(s)
    if not match or int(match.group(4)) == 0:
        return s
    sign, whole, num, den = match.groups()
    value = int(whole) + Fraction(int(num), int(den))
    return f"{sign}{value.numerator}/{value.denominator}"


def _squeeze_spaces(s: str) -> str:
    """Drop whitespace, except the one space that keeps `\\le x` from becoming `\\lex`."""
    return _SPACE_RE.sub(lambda m: m.group(1) + " " if m.group(1) else "", s)


def _fold_words(s: str) -> str:
    """A lone word answer: a number word becomes its digits, any other word is lower-cased."""
    if not re.fullmatch(r"[A-Za-z]{2,}", s):
        return s
    return _NUMBER_WORDS.get(s.lower(), s.lower())


def normalize_answer(answer: str) -> str:
    """A canonical string: spacing, `\\dfrac`, `\\text{}`, units, percent, degrees, separators removed."""
    s = _drop_units(_DIGIT_GROUP_RE.sub("", answer.strip()))
    s = _list_separators(_PERCENT_RE.sub(r"\\%", s))
    for cmd in _STRIP_COMMANDS:
        s = s.replace(cmd, "")
    s = _unwrap_styles(s)
    for pattern, replacement in _REWRITES:
        s = re.sub(pattern, replacement, s.strip())
    s = s.strip().rstrip(".").strip()
    if _THOUSANDS_RE.fullmatch(s):
        s = s.replace(",", "")
    return _fold_words(_squeeze_spaces(_mixed_number(s)).rstrip("."))


_VARIABLE = r"[A-Za-z]+(?:_\{?\w+\}?)?'?"
_NAMED_RE = re.compile(
    rf"({_VARIABLE}|[A-Za-z]\([A-Za-z]\)|\|[A-Za-z]+\||\((?:{_VARIABLE},)+{_VARIABLE}\))(?:=|\\in(?![A-Za-z]))(.*)"
)
_ASSIGNS_RE = re.compile(r"=|\\in(?![A-Za-z])")
_INTERVAL_RE = re.compile(r"[\[(].*,.*[\])]")
_BOUND = r"[^<>=]+?"
_LESS = r"(<|\\le ?)"
_GREATER = r"(>|\\ge ?)"
_RANGES = [
    (re.compile(rf"({_BOUND}){_LESS}[A-Za-z]{_LESS}({_BOUND})"), lambda lo, a, b, hi: (lo, a, b, hi)),
    (re.compile(rf"[A-Za-z]{_LESS}({_BOUND})"), lambda b, hi: ("-\\infty", "<", b, hi)),
    (re.compile(rf"[A-Za-z]{_GREATER}({_BOUND})"), lambda a, lo: (lo, a, "<", "\\infty")),
    (re.compile(rf"({_BOUND}){_LESS}[A-Za-z]"), lambda lo, a: (lo, a, "<", "\\infty")),
    (re.compile(rf"({_BOUND}){_GREATER}[A-Za-z]"), lambda hi, b: ("-\\infty", "<", b, hi)),
]


def _top_level_split(s: str) -> list[str]:
    """Items separated by `,`/`;` outside brackets, each keeping its trailing separator."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(s):
        depth += ch in "([{"
        depth -= ch in ")]}"
        if depth == 0 and ch in ",;":
            parts.append(s[start : i + 1])
            start = i + 1
    return [*parts, s[start:]]


def drop_variable_names(s: str) -> str:
    """`x=-5,p=\\frac{14}{3}` -> `-5,\\frac{14}{3}`, `x\\in[0,1]` -> `[0,1]`: a lone name in each item."""
    parts = []
    for item in _top_level_split(s):
        body, sep = (item[:-1], item[-1]) if item[-1:] in (",", ";") else (item, "")
        if (named := _NAMED_RE.fullmatch(body)) and not _ASSIGNS_RE.search(named.group(2)):
            body = named.group(2)
        parts.append(body + sep)
    return "".join(parts)


def as_interval(s: str) -> str | None:
    """`2\\le x<5` -> `[2,5)`, `x>3` -> `(3,\\infty)`: a range of one variable as an interval."""
    for pattern, bounds in _RANGES:
        if match := pattern.fullmatch(s):
            lo, lower, upper, hi = (part.strip() for part in bounds(*match.groups()))
            opening = "(" if lower in "<>" or "infty" in lo else "["
            closing = ")" if upper in "<>" or "infty" in hi else "]"
            return f"{opening}{lo},{hi}{closing}"
    return None


def align_forms(gold: str, pred: str) -> tuple[str, str]:
    """Bring two normalized answers to one shape when only one of them names a variable or a range.

    `x=5` against `5` drops the name; `2\\le x<5` against `[2,5)` becomes the interval.
    """
    if bool(_ASSIGNS_RE.search(gold)) != bool(_ASSIGNS_RE.search(pred)):
        gold, pred = drop_variable_names(gold), drop_variable_names(pred)
    if _INTERVAL_RE.fullmatch(gold) and (interval := as_interval(pred)):
        pred = interval
    elif _INTERVAL_RE.fullmatch(pred) and (interval := as_interval(gold)):
        gold = interval
    return gold, pred


_NUMBER_FORM_RE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:/\d+|[eE][+-]?\d{1,3})?")
_FRAC_FORM_RE = re.compile(r"(-?)\\frac\{(-?\d+)\}\{(-?\d+)\}")
_SCIENTIFIC_RE = re.compile(r"([+-]?\d+(?:\.\d+)?)(?:\\times|\\cdot|\*)10\^\{([+-]?\d{1,3})\}")
_DECIMAL_COMMA_RE = re.compile(r"-?\d+,\d+")
_NUMBER_LIST_RE = re.compile(r"-?\d+(?:\.\d+)?(?:,-?\d+(?:\.\d+)?)+")
MIN_ROUNDED_DIGITS = 6


def as_number(s: str) -> Fraction | None:
    """The exact value of an integer, decimal, `a/b`, `\\frac{a}{b}`, `1.2e3` or `1.2\\times10^{3}`."""
    try:
        if frac := _FRAC_FORM_RE.fullmatch(s):
            value = Fraction(int(frac.group(2)), int(frac.group(3)))
            return -value if frac.group(1) else value
        if scientific := _SCIENTIFIC_RE.fullmatch(s):
            return Fraction(scientific.group(1)) * Fraction(10) ** int(scientific.group(2))
        if _NUMBER_FORM_RE.fullmatch(s):
            return Fraction(s)
    except (ValueError, ZeroDivisionError, OverflowError):
        return None
    return None


def decimal_comma_twin(raw: str, normalized: str, other: str) -> bool:
    """`1,22` against `1.22`: the same digits written with a decimal comma.

    Only a comma with no space after it counts (`-2, 1` is a list), and only against the very same
    digits with a point: a lone `1,5` might still be the list 1, 5.
    """
    return (
        bool(_DECIMAL_COMMA_RE.fullmatch(normalized))
        and ", " not in raw
        and normalized.replace(",", ".") == other
    )


def list_against_number(gold: str, pred: str) -> bool:
    """`32,349` (left a list by normalization, which joins real digit groups) against one number."""
    return any(
        _NUMBER_LIST_RE.fullmatch(a) and as_number(b) is not None for a, b in ((gold, pred), (pred, gold))
    )


def numbers_match(gold: Fraction, pred: Fraction, gold_text: str, pred_text: str) -> bool:
    """Equal values, or a long decimal that is the other value rounded or cut to its digits."""
    if gold == pred:
        return True
    for text in (gold_text, pred_text):
        digits = len(text.partition(".")[2])
        if "/" not in text and "e" not in text.lower() and digits >= MIN_ROUNDED_DIGITS:
            return abs(gold - pred) < Fraction(1, 10**digits)
    return False
