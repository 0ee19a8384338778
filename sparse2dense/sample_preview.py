"""The first graded samples of each benchmark, shortened for a person to read while an eval runs.

A score says how often the model is right; these say what it writes. The eval program prints a
benchmark's first samples to its log as soon as it has graded a shard (`SampleLog`) and writes the
first `FILE_SAMPLES` per benchmark to `samples.md` and `samples.jsonl`; the stage's MLflow run shows
them as a table and its Prefect task as a markdown artifact. One sample per problem (the first of its
k), so the preview spans problems; long texts keep their start and their end, where the answer is.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

SAMPLES_FILE = "samples.md"  # markdown, one table per benchmark
SAMPLES_ROWS = "samples.jsonl"  # the same samples, one JSON object per line (`COLUMNS`)
MLFLOW_TABLE = "samples.json"  # the MLflow table artifact made from SAMPLES_ROWS
LOG_SAMPLES = 4  # per benchmark, in the stage log
FILE_SAMPLES = 8  # per benchmark, in SAMPLES_FILE and SAMPLES_ROWS
PROBLEM_CHARS = 200
COMPLETION_CHARS = 400
ANSWER_CHARS = 60

COLUMNS = (
    "benchmark",
    "id",
    "problem",
    "gold",
    "completion",
    "pred",
    "verdict",
    "reason",
    "finish_reason",
    "num_tokens",
)


def shorten(text: str, limit: int) -> str:
    """`text` if it fits in `limit` characters, else its first two thirds and last third of `limit`
    around a count of what was left out."""
    if len(text) <= limit:
        return text
    head, tail = limit * 2 // 3, limit // 3
    return f"{text[:head]} …[{len(text) - head - tail} chars]… {text[len(text) - tail :]}"


def preview_rows(bench: str, rows: Iterable[dict], problems: dict[str, str], n: int) -> list[dict[str, Any]]:
    """The first sample of each of the first `n` records of `bench` (records as the eval program
    writes them; `problems`: problem text by id), shortened, with the fields of `COLUMNS`."""
    out = []
    for row in rows:
        if len(out) == n:
            break
        sample = row["samples"][0]
        out.append(
            {
                "benchmark": bench,
                "id": str(row["id"]),
                "problem": shorten(problems.get(row["id"], ""), PROBLEM_CHARS),
                "gold": shorten(str(row["answer"]), ANSWER_CHARS),
                "completion": shorten(sample["text"], COMPLETION_CHARS),
                "pred": shorten(str(sample["pred"] or ""), ANSWER_CHARS),
                "verdict": sample["verdict"],
                "reason": sample["reason"],
                "finish_reason": sample["finish_reason"],
                "num_tokens": sample["num_tokens"],
            }
        )
    return out


def one_line(text: str) -> str:
    """`text` on one line: each run of newlines shown as one ⏎."""
    return " ⏎ ".join(part.strip() for part in text.splitlines() if part.strip())


def log_lines(name: str, samples: list[dict[str, Any]]) -> list[str]:
    """Stage-log lines for `samples` (preview rows): a header per sample, then problem, completion
    and the grader's reason, indented."""
    lines = []
    for i, s in enumerate(samples, 1):
        lines.append(
            f"[{name}] {s['benchmark']} sample {i}/{len(samples)} (problem {s['id']}): {s['verdict']}, "
            f"pred {s['pred']!r}, gold {s['gold']!r} ({s['finish_reason']}, {s['num_tokens']} tokens)"
        )
        lines.append(f"    problem: {one_line(s['problem'])}")
        lines.append(f"    completion: {one_line(s['completion'])}")
        lines.append(f"    reason: {s['reason']}")
    return lines


def table_cell(value: Any) -> str:
    """`value` as the text of a markdown table cell: HTML-escaped (a `<think>` stays visible), pipes
    escaped, newlines as <br>."""
    text = html.escape(str(value), quote=False).replace("|", "\\|")
    return "<br>".join(text.splitlines()) or " "


def render_markdown(samples: list[dict[str, Any]], per_benchmark: int | None = None) -> str:
    """A section with one table per benchmark, in order of first appearance; at most `per_benchmark`
    samples each (all when None)."""
    by_bench: dict[str, list[dict[str, Any]]] = {}
    for s in samples:
        by_bench.setdefault(s["benchmark"], []).append(s)
    parts = ["# First graded samples", ""]
    header = "| # | problem | gold | completion | pred | verdict | finish, tokens |"
    for bench, rows in by_bench.items():
        parts += [f"## {bench}", "", header, "|---|---|---|---|---|---|---|"]
        for i, s in enumerate(rows[:per_benchmark], 1):
            cells = [
                str(i),
                table_cell(s["problem"]),
                table_cell(s["gold"]),
                table_cell(s["completion"]),
                table_cell(s["pred"]),
                table_cell(f"{s['verdict']}: {s['reason']}"),
                table_cell(f"{s['finish_reason']}, {s['num_tokens']}"),
            ]
            parts.append("| " + " | ".join(cells) + " |")
        parts.append("")
    return "\n".join(parts)


def save_samples(out_dir: Path, samples: list[dict[str, Any]]) -> None:
    """`samples.md` and `samples.jsonl` in a stage's output directory."""
    (out_dir / SAMPLES_FILE).write_text(render_markdown(samples))
    with open(out_dir / SAMPLES_ROWS, "w") as fh:
        for s in samples:
            fh.write(json.dumps(s, ensure_ascii=False) + "\n")


def load_samples(out_dir: Path) -> list[dict[str, Any]]:
    """The preview rows a stage wrote, or [] when it wrote none (not an eval, or an older result)."""
    path = Path(out_dir) / SAMPLES_ROWS
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def table_columns(samples: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """The rows as columns (`COLUMNS`), the shape MLflow's `log_table` takes."""
    return {c: [s[c] for s in samples] for c in COLUMNS}


class SampleLog:
    """Prints one benchmark's first graded samples to the stage log once: as soon as this process
    has graded a shard, so a person sees what the model writes minutes into a long eval, or, when
    every shard was finished by an earlier run, once the benchmark's rows are assembled."""

    def __init__(self, name: str, bench: str, problems: dict[str, str], n: int = LOG_SAMPLES) -> None:
        self.name, self.bench, self.problems, self.n = name, bench, problems, n
        self.shown = False

    def show(self, rows: list[dict]) -> None:
        if self.shown or not rows:
            return
        self.shown = True
        samples = preview_rows(self.bench, rows, self.problems, self.n)
        print("\n".join(log_lines(self.name, samples)), flush=True)

    def showing(self, produce: Callable[[int, list], list[dict]]) -> Callable[[int, list], list[dict]]:
        """`produce` (a `ShardedGeneration` shard function), showing the first shard it grades."""

        def produce_and_show(index: int, shard: list) -> list[dict]:
            rows = produce(index, shard)
            self.show(rows)
            return rows

        return produce_and_show
