"""Grader throughput: answers/second on realistic (gold, completion) pairs, ours vs math-verify direct.

Pairs come from MATH-500 and MATH-train gold answers, perturbed the way model outputs differ from
a reference: the same answer, an equivalent rewrite (`\\dfrac`, spacing, `\\left(`, a decimal, a
trailing period, `\\text{}`), a wrong answer (another problem's, or off by one) and no box at all.
Modes: our grader with one worker (one calling thread) and with N workers (N calling threads), and
math-verify called directly in this one process (`verify(parse(gold), parse(completion))`, its
default extraction and signal timeouts). Worker start-up is excluded (pools are warmed first) and
each mode starts with an empty cache. Also prints how often ours and math-verify disagree. Run:
  python benchmarks/grader_throughput.py [DATA_DIR] [--pairs 5000] [--workers N] [--limit-s 5]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sparse2dense import grader_pool  # noqa: E402
from sparse2dense.grading import extract_boxed, grade_completion  # noqa: E402

FILLER = "Let us work through the problem step by step. Combining the pieces above, we find the value."


def _answers(data: Path) -> list[str]:
    answers = []
    with open(data / "math500" / "test.jsonl") as fh:
        answers += [json.loads(line)["answer"] for line in fh]
    with open(data / "math_train" / "train.jsonl") as fh:
        for line in fh:
            boxed = extract_boxed(json.loads(line)["solution"])
            if boxed and boxed.strip():
                answers.append(boxed)
    return answers


def _rewrite(answer: str, rng: random.Random) -> str:
    """An equivalent rendering of the answer, as models write them."""
    frac = re.fullmatch(r"\\frac\{(\d+)\}\{(\d+)\}", answer)
    options = [
        answer.replace(r"\frac", r"\dfrac"),
        answer.replace(" ", "") if " " in answer else f" {answer} ",
        answer + ".",
        answer.replace("(", r"\left(").replace(")", r"\right)"),
        rf"\text{{{answer}}}" if answer.isdigit() else answer.replace("+", " + "),
    ]
    if frac and int(frac.group(2)) in (2, 4, 5, 8, 10, 20, 25):
        options.append(str(int(frac.group(1)) / int(frac.group(2))))
    return rng.choice(options)


def _wrong(answer: str, answers: list[str], rng: random.Random) -> str:
    if answer.lstrip("-").isdigit() and rng.random() < 0.5:
        return str(int(answer) + rng.choice([-1, 1]))
    return rng.choice(answers)


def build_pairs(data: Path, n: int, seed: int = 0) -> list[tuple[str, str, str]]:
    """(kind, gold, completion) triples: 30% same, 20% rewrite, 35% wrong, 15% unboxed."""
    rng = random.Random(seed)
    answers = _answers(data)
    pairs = []
    for _ in range(n):
        gold = rng.choice(answers)
        roll = rng.random()
        if roll < 0.30:
            kind, completion = "same", f"{FILLER} \\boxed{{{gold}}}"
        elif roll < 0.50:
            kind, completion = "rewrite", f"{FILLER} \\boxed{{{_rewrite(gold, rng)}}}"
        elif roll < 0.85:
            kind, completion = "wrong", f"{FILLER} \\boxed{{{_wrong(gold, answers, rng)}}}"
        else:
            # Our protocol grades only boxed answers; math-verify also reads plain text.
            kind, completion = "unboxed", f"{FILLER} So the answer is {gold} probably."
        pairs.append((kind, gold, completion))
    return pairs


def run_ours(pairs, workers: int, limit_s: float) -> tuple[float, list[bool], float]:
    pool = grader_pool.configure(workers=workers, limit_s=limit_s)
    start = time.perf_counter()
    pool.warm()
    startup = time.perf_counter() - start
    start = time.perf_counter()
    if workers == 1:
        grades = [grade_completion(g, c) for _, g, c in pairs]
    else:
        with ThreadPoolExecutor(max_workers=workers) as executor:
            grades = list(executor.map(lambda pair: grade_completion(*pair[1:]), pairs))
    elapsed = time.perf_counter() - start
    print(f"    pool stats: {pool.stats}")
    grader_pool.shutdown()
    return elapsed, [g.correct for g in grades], startup


def run_math_verify(pairs) -> tuple[float, list[bool]]:
    from math_verify import parse, verify

    start = time.perf_counter()
    verdicts = []
    for _, gold, completion in pairs:
        try:
            verdicts.append(bool(verify(parse(f"${gold}$"), parse(completion))))
        except Exception:  # noqa: BLE001 - count a crash as not correct, as a reward would
            verdicts.append(False)
    return time.perf_counter() - start, verdicts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", nargs="?", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--pairs", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=grader_pool.default_workers())
    parser.add_argument("--limit-s", type=float, default=grader_pool.DEFAULT_LIMIT_S)
    args = parser.parse_args()
    pairs = build_pairs(args.data_dir, args.pairs)
    print(f"{len(pairs)} pairs from {args.data_dir}")

    results = {}
    for label, workers in (("ours, 1 worker", 1), (f"ours, {args.workers} workers", args.workers)):
        print(f"  {label} ...", flush=True)
        elapsed, verdicts, startup = run_ours(pairs, workers, args.limit_s)
        results[label] = (elapsed, verdicts)
        print(
            f"    {len(pairs) / elapsed:,.0f} answers/s ({elapsed:.1f}s; worker start-up {startup:.1f}s excluded)"
        )
    print("  math-verify direct, one process ...", flush=True)
    elapsed, mv = run_math_verify(pairs)
    print(f"    {len(pairs) / elapsed:,.0f} answers/s ({elapsed:.1f}s)")

    for label, (ours_s, verdicts) in results.items():
        print(
            f"\n{label}: {elapsed / ours_s:.1f}x math-verify's throughput; correct {sum(verdicts)} vs {sum(mv)}"
        )
    ours = next(iter(results.values()))[1]
    disagree = [i for i, (a, b) in enumerate(zip(ours, mv, strict=True)) if a != b]
    by_kind = Counter((pairs[i][0], f"ours={ours[i]}") for i in disagree)
    print(f"\ndisagreements with math-verify: {len(disagree)} of {len(pairs)}")
    for (kind, side), count in sorted(by_kind.items()):
        print(f"  {kind:<8} {side:<11} {count}")
    shown = Counter()
    for i in disagree:
        kind, gold, completion = pairs[i]
        if shown[kind] < 4 and kind != "unboxed":
            shown[kind] += 1
            print(
                f"  {kind}: ours={ours[i]!s:<5} mv={mv[i]!s:<5} gold={gold!r} tail={completion[len(FILLER) :]!r}"
            )


if __name__ == "__main__":
    main()
