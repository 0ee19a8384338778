"""Decontamination: drop training problems that appear in an eval set.

Two tests, as in common practice (GPT-3 / Llama reports): normalized exact match (case, whitespace,
`$` and LaTeX spacing removed) and any shared word n-gram (n=13 by default) with an eval problem.
Written here because the check is a few lines over the project's own record schema; what was
removed, and which eval problem it matched, is reported so a reviewer can see every decision.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

from sparse2dense.data import Record


def normalize_problem(text: str) -> str:
    """Lower case without `$`, LaTeX spacing commands or any whitespace: for exact matching."""
    text = re.sub(r"\\[,;:! ]", "", text.lower().replace("$", ""))
    return re.sub(r"\s+", "", text)


_ASY_RE = re.compile(r"\[asy\].*?\[/asy\]", re.S | re.I)
_COMMAND_RE = re.compile(r"\\[a-zA-Z]+")


def word_ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    """Word n-grams of the problem's prose: drawing code and LaTeX command names carry no content."""
    words = re.findall(r"\w+", _COMMAND_RE.sub(" ", _ASY_RE.sub(" ", text)).lower())
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


class EvalIndex:
    """Every eval problem's normalized text and n-grams, for fast lookups of training problems."""

    def __init__(self, eval_records: Iterable[Record], n: int) -> None:
        self.n = n
        self.exact: dict[str, str] = {}
        owners: dict[tuple[str, ...], set[str]] = {}
        for record in eval_records:
            self.exact.setdefault(normalize_problem(record["problem"]), record["id"])
            for gram in word_ngrams(record["problem"], n):
                owners.setdefault(gram, set()).add(record["id"])
        # An n-gram shared by several eval problems is contest boilerplate ("where m and n are
        # relatively prime positive integers"), not a problem's content.
        self.grams = {gram: ids.pop() for gram, ids in owners.items() if len(ids) == 1}

    def exact_match(self, problem: str) -> str | None:
        return self.exact.get(normalize_problem(problem))

    def gram_hits(self, problem: str) -> list[tuple[tuple[str, ...], str]]:
        return [(g, self.grams[g]) for g in word_ngrams(problem, self.n) if g in self.grams]

    def match(self, problem: str) -> tuple[str, str] | None:
        """(reason, eval id) if the problem matches an eval problem, else None (no corpus filter)."""
        if (hit := self.exact_match(problem)) is not None:
            return "exact", hit
        hits = self.gram_hits(problem)
        return (f"{self.n}-gram", hits[0][1]) if hits else None


def decontaminate(
    records: list[Record], index: EvalIndex, boilerplate_hits: int = 5
) -> tuple[list[Record], list[dict]]:
    """Split records into (kept, removed). An n-gram that the corpus shares with an eval problem in
    `boilerplate_hits` or more distinct records is stock phrasing of that corpus ("... can be
    written as m/n where m and n are relatively prime ..."), not a leaked problem. Removing records
    can make such a phrase rare again, so passes repeat until one removes nothing: the kept records
    then pass the same check."""
    kept, removed = list(records), []
    while True:
        kept, newly = _one_pass(kept, index, boilerplate_hits)
        removed += newly
        if not newly:
            return kept, removed


def _one_pass(records: list[Record], index: EvalIndex, boilerplate_hits: int) -> tuple[list, list]:
    hits = [index.gram_hits(r["problem"]) for r in records]
    spread = Counter(g for record_hits in hits for g in {g for g, _ in record_hits})
    kept, removed = [], []
    for record, record_hits in zip(records, hits, strict=True):
        if (eval_id := index.exact_match(record["problem"])) is not None:
            removed.append({"id": record["id"], "reason": "exact", "eval_id": eval_id})
            continue
        specific = [(g, e) for g, e in record_hits if spread[g] < boilerplate_hits]
        if specific:
            removed.append({"id": record["id"], "reason": f"{index.n}-gram", "eval_id": specific[0][1]})
        else:
            kept.append(record)
    return kept, removed
