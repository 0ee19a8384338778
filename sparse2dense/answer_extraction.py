"""Where a model output states its answer: its final boxes, or the value its final sentence gives.

A completion's answer is its last `\\boxed{}` (or `\\fbox{}`), or its final boxes together when only
connectors (`,`, `and`, `\\quad`, a `y_2 =` label) stand between them. Outputs written without a box
(free-form completions, other graders' test data) state the answer in prose: "The final answer is
$x$", "... so the probability is 2/3", "Therefore $x \\geq 5$ is the solution". A bare answer with no
prose around it is its own answer. Plain string work: nothing here reaches sympy.

This runs in the caller's process (the GRPO reward, eval, `s2d grade`), where no limit could stop a
regex, so its work is bounded whatever the text: an output longer than `MAX_SEARCHED_CHARS` is read
from its end only, and every pattern is linear in what it reads (no nested or overlapping
quantifiers; the prose patterns see a 2,000-char tail).
"""

from __future__ import annotations

import re

# 256 KiB: over three times the longest completion a config generates (16k tokens). The box scan costs
# Python work per box and brace, so a 20 MB output of them is cut before any pattern runs.
MAX_SEARCHED_CHARS = 1 << 18

_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*")
_BARE_RE = re.compile(r"[^\s$]+")
_BRACE_RE = re.compile(r"[{}]")

# Chat-template tokens ending the text (`<|im_end|>`, `<|im_start|>user`), matched on the reversed text
# from its start: searched forwards, a run of them that fails to reach the end is rescanned from each
# of its tokens, quadratic in the run. Possessive: nothing to backtrack into, nor state kept for it.
_END_TOKENS_REVERSED_RE = re.compile(r"(?:\s*+\w*+>\|\w++\|<)++")
_SIGN_OFF_RE = re.compile(r"I hope it is correct\.?")


def _strip_trailer(text: str) -> str:
    """The text without the chat-template tokens that end it and without "I hope it is correct."."""
    tokens = _END_TOKENS_REVERSED_RE.match(text[::-1])
    return _SIGN_OFF_RE.sub("", text[: len(text) - tokens.end()] if tokens else text)


def _searched_part(text: str) -> str:
    """The part of an output its answer is looked for in: all of it, or its last MAX_SEARCHED_CHARS."""
    return text[-MAX_SEARCHED_CHARS:]


def _closing_braces(text: str, start: int) -> dict[int, int]:
    """Position of each `{` (from `start` on) -> its matching `}`; unmatched ones are absent."""
    closing, stack = {}, []
    for match in _BRACE_RE.finditer(text, start):
        if match.group() == "{":
            stack.append(match.start())
        elif stack:
            closing[stack.pop()] = match.start()
    return closing


def _boxes(text: str) -> list[tuple[int, int, str]]:
    """(start, end, content) of every complete box, in order; boxes nested in a box are skipped.

    One brace-matching pass serves every candidate box, so a megabyte of unbalanced `\\boxed{`
    stays linear instead of rescanning the tail once per box.
    """
    matches = list(_BOX_RE.finditer(text))
    closing: dict[int, int] | None = None
    boxes: list[tuple[int, int, str]] = []
    for match in matches:
        start = match.end()
        if boxes and match.start() < boxes[-1][1]:
            continue
        if start < len(text) and text[start] == "{":
            if closing is None:
                closing = _closing_braces(text, matches[0].end())
            end = closing.get(start)
            if end is not None:
                boxes.append((match.start(), end + 1, text[start + 1 : end]))
        elif bare := _BARE_RE.match(text, start):
            boxes.append((match.start(), bare.end(), bare.group(0)))
    return boxes


def has_box(text: str) -> bool:
    return _BOX_RE.search(_searched_part(text)) is not None


def extract_boxed(text: str) -> str | None:
    """Content of the last complete `\\boxed{...}`/`\\fbox{...}` (nested braces kept), or `\\boxed 7`."""
    boxes = _boxes(_searched_part(text))
    return boxes[-1][2] if boxes else None


_CONNECTOR_RE = re.compile(
    r"(?:\s|[,;&]|\$|\\[()\[\]]|\\\\|\\[,;:! ]|\\q?quad|\\text\{\s*(?:(?:and|,|;)\s*)?\}|\band\b"
    r"|[A-Za-z](?:_\{?\w+\}?)?\s*=)*"
)


def _final_run(text: str, items: list[tuple[int, int, str]]) -> str:
    """The last item's content, joined (`, `) with the items before it that only connectors separate."""
    run = [items[-1]]
    for item in reversed(items[:-1]):
        if not _CONNECTOR_RE.fullmatch(text[item[1] : run[-1][0]]):
            break
        run.append(item)
    return ", ".join(dict.fromkeys(content.strip() for _, _, content in reversed(run)))


_MATH_SPAN_RE = re.compile(r"\$\$(.+?)\$\$|\\\[(.+?)\\\]|\\\((.+?)\\\)|(?<!\\)\$(.+?)(?<!\\)\$", re.S)
_STYLED_RE = re.compile(r"\\[A-Za-z]+\{[^{}]*\}")
_WORD_RE = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{2,}")
_FINAL_RE = re.compile(r"(?i)final answer(?: is)?\s*[:：]?|\bthe answer is\s*:?|^\s*answer\s*:|####", re.M)
_SENTENCE_END_RE = re.compile(r"(?<=[.!?])\s+|\n|(?<=\$\$|\\\])\s+(?=[A-Z])")
_NUMBER_RE = re.compile(r"(?<![\w.])-?\d(?:[\d,]*\d)?(?:\.\d+)?(?:/\d+)?%?(?!\d)")
_MATH_WORDS = r"(?:pi|sin|cos|tan|cot|sec|csc|log|ln|sqrt|exp)\b"
_MARKDOWN_RE = re.compile(r"\*\*|__")
_LONE_EQUALS_RE = re.compile(r"(?<![<>!=])=(?!=)")
_COUNTED_RE = re.compile(rf"(-?[\d,]*\d(?:\.\d+)?)\s+(?!{_MATH_WORDS})[A-Za-z]{{2,}}(?:\s+[A-Za-z]{{2,}})?")
PROSE_TAIL_CHARS = 2000  # a final statement lies in the tail; the span regex stays cheap on it


def _math_spans(text: str) -> list[tuple[int, int, str]]:
    return [
        (m.start(), m.end(), next(g for g in m.groups() if g is not None))
        for m in _MATH_SPAN_RE.finditer(text)
    ]


def _prose_words(text: str) -> list[str]:
    return _WORD_RE.findall(_STYLED_RE.sub(" ", _MATH_SPAN_RE.sub(" ", text)))


def is_bare_answer(text: str) -> bool:
    """True for an answer on its own (`x \\in [-2,7]`, `$\\frac12$`, `28 percent`), not prose."""
    spans = list(_MATH_SPAN_RE.finditer(text.strip()))
    if len(spans) == 1 and spans[0].span() == (0, len(text.strip())):
        return True
    return not spans and len(_prose_words(text)) < 3


def _has_value(text: str) -> bool:
    return bool(_MATH_SPAN_RE.search(text) or re.search(r"\d", text))


def _statement_after(phrase: re.Match) -> str:
    """The first sentence with a value after a "final answer" phrase (`**Final Answer**\\n\\[ 7 \\]`)."""
    sentences = _SENTENCE_END_RE.split(phrase.string[phrase.end() :])
    return next((s for s in sentences if _has_value(s)), sentences[0])


def _final_statement(text: str) -> str:
    """The sentence after the last "final answer is", else the last sentence that has a value."""
    if phrases := list(_FINAL_RE.finditer(text)):
        return _statement_after(phrases[-1])
    sentences = [s for s in _SENTENCE_END_RE.split(text) if _has_value(s)]
    return sentences[-1] if sentences else text


def _value_in(statement: str) -> str | None:
    """The value a statement gives: after `... is`, its final math spans; else, after its last `=`,
    `17` of `17 apples`, the statement itself when short, or its last number."""
    if " is " in statement and _has_value(tail := statement.rsplit(" is ", 1)[1]):
        statement = tail
    if spans := _math_spans(statement):
        return _final_run(statement, spans)
    statement = _LONE_EQUALS_RE.split(statement)[-1].strip().rstrip(".")
    if counted := _COUNTED_RE.fullmatch(statement):
        return counted.group(1)
    if len(_prose_words(statement)) <= 2:
        return statement
    numbers = _NUMBER_RE.findall(statement)
    return numbers[-1] if numbers else None


def _stated_after_box(text: str, boxes: list[tuple[int, int, str]]) -> str | None:
    """The value of a "final answer is" statement that follows the last box, if there is one."""
    tail = _strip_trailer(text[boxes[-1][1] :])[-PROSE_TAIL_CHARS:]
    phrases = list(_FINAL_RE.finditer(tail))
    return _value_in(_statement_after(phrases[-1])) if phrases else None


def _box_readings(text: str, boxes: list[tuple[int, int, str]]) -> list[str]:
    return list(dict.fromkeys([boxes[-1][2].strip(), _final_run(text, boxes)]))


def boxed_answers(text: str) -> list[str]:
    """What a completion's boxes answer: the last box, then the final boxes joined if several.

    Several boxes count together only when connectors alone separate them (`\\boxed{1}, \\boxed{2}`,
    `\\boxed{x=1} \\quad \\text{and} \\quad \\boxed{y=2}`): a hedge such as `\\boxed{3} then \\boxed{4}`
    still answers 4 alone. Empty for a completion without a complete box.
    """
    text = _searched_part(text)
    boxes = _boxes(text)
    return _box_readings(text, boxes) if boxes else []


def answer_candidates(text: str) -> list[str]:
    """What a completion or a bare answer states, most direct reading first (may be empty).

    With boxes: `boxed_answers`, then a "final answer is" statement written after the last box.
    Without: the text itself when it looks like a bare answer, then the value of its final
    statement (the sentence after "final answer is", or the last sentence with a value).
    """
    text = _searched_part(text)
    if _BOX_RE.search(text):
        if not (boxes := _boxes(text)):
            return []
        stated = _stated_after_box(text, boxes)
        return list(dict.fromkeys(_box_readings(text, boxes) + ([stated] if stated else [])))
    bare = [text] if len(text) <= PROSE_TAIL_CHARS and is_bare_answer(text) else []
    if bare and not _prose_words(text):
        return bare
    tail = _MARKDOWN_RE.sub("", _strip_trailer(text)[-PROSE_TAIL_CHARS:])
    stated = _value_in(_final_statement(tail))
    return list(dict.fromkeys(bare + [stated or text]))
