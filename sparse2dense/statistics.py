"""The statistics a sweep report rests on: an arm's mean over seeds, and paired deltas between arms.

A problem's score is its mean correctness over its k eval samples (`problem_scores`). Seeds are the
replicates: each retrains every stage, so a result moves from seed to seed far more than the test
problems' sampling says. Verdicts therefore rest on the t interval over seeds (`mean_over_seeds`,
and for a paired delta the t interval of its per-seed deltas); the paired bootstrap over problems
within each seed, pooled over seeds, holds each trained run fixed and is kept as a second, named
interval. Why t over seeds and not a bootstrap over seeds: with the 3-5 seeds a sweep affords, a
bootstrap over seeds undercovers (its variance is (n-1)/n of the sample's and it has no t tails).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from sparse2dense.grading import Verdict


def problem_scores(records: Iterable[dict]) -> dict[str, float]:
    """Problem id -> the fraction of its samples graded correct (eval's `records/<benchmark>.jsonl`)."""
    scores = {}
    for record in records:
        samples = record["samples"]
        if not samples:
            raise ValueError(f"problem {record['id']!r} has no samples")
        scores[str(record["id"])] = sum(s["verdict"] == str(Verdict.CORRECT) for s in samples) / len(samples)
    return scores


@dataclass(frozen=True)
class SeedMean:
    """An arm's mean over seeds; `low`/`high` are None with fewer than two seeds (no spread to use)."""

    mean: float
    low: float | None
    high: float | None
    values: tuple[float, ...]


def mean_over_seeds(values: Sequence[float], confidence: float = 0.95) -> SeedMean:
    """Mean of per-seed results with the t interval `mean +- t_{n-1} * sd / sqrt(n)` (sd with n-1)."""
    if not values:
        raise ValueError("mean_over_seeds needs at least one seed's value")
    n, mean = len(values), sum(values) / len(values)
    if n < 2:
        return SeedMean(mean, None, None, tuple(values))
    from scipy.stats import t

    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return SeedMean(mean, mean - half, mean + half, tuple(values))


def paired_scores(
    a: Mapping[str, float], b: Mapping[str, float], what: str = "arms"
) -> tuple[list[float], list[float]]:
    """Two arms' scores on the same problems, in one order; refused when the problem sets differ."""
    if set(a) != set(b):
        only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
        raise ValueError(f"{what} were evaluated on different problems: {only_a[:3]} vs {only_b[:3]}")
    ids = sorted(a)
    return [a[i] for i in ids], [b[i] for i in ids]


@dataclass(frozen=True)
class PairedDelta:
    """Mean of (a - b) over seeds with two 95% intervals, and each seed's own mean difference.

    `seeds_low`/`seeds_high`: the t interval over the per-seed deltas, which counts run-to-run
    variance (None with one seed); verdicts rest on it. `problems_low`/`problems_high`: the paired
    bootstrap over problems, which treats every trained run as fixed (problem sampling only).
    """

    delta: float
    seeds_low: float | None
    seeds_high: float | None
    problems_low: float
    problems_high: float
    per_seed: tuple[float, ...]
    problems: tuple[int, ...]

    @property
    def significant(self) -> bool:
        """The interval over seeds excludes 0 (never with one seed: no run-to-run interval)."""
        if self.seeds_low is None or self.seeds_high is None:
            return False
        return not self.seeds_low <= 0.0 <= self.seeds_high

    @property
    def verdict(self) -> str:
        """`a > b` or `a < b` when the interval over seeds excludes 0, else why there is no ordering."""
        if self.seeds_low is None:
            return "one seed: no interval over seeds"
        if not self.significant:
            return "not shown (interval over seeds holds 0)"
        return "a > b" if self.delta > 0 else "a < b"


def paired_delta(
    pairs_by_seed: Sequence[tuple[Sequence[float], Sequence[float]]],
    confidence: float = 0.95,
    resamples: int = 2000,
    rng_seed: int = 0,
) -> PairedDelta:
    """mean(a) - mean(b) on paired problems, per seed and over seeds, with both intervals.

    `pairs_by_seed[s]` is (a's scores, b's scores) on seed s's problems, problem i at index i in both.
    Point estimate: the mean over seeds (equal weight) of each seed's mean paired difference d_s.
    Over seeds: `mean_over_seeds` of the d_s (t with n-1 degrees of freedom). Over problems: one
    bootstrap replicate draws, independently in every seed, n_s problems with replacement, takes the
    mean difference and averages over seeds with the same weights; the percentile interval of
    `resamples` replicates from a generator seeded with `rng_seed`, so a report is reproducible.
    """
    if not pairs_by_seed:
        raise ValueError("paired_delta needs at least one seed with paired scores")
    rng = np.random.default_rng(rng_seed)
    replicates_R = np.zeros(resamples)
    per_seed, problems = [], []
    for a, b in pairs_by_seed:
        if len(a) != len(b) or not a:
            raise ValueError(f"paired scores need equal, non-empty lengths; got {len(a)} and {len(b)}")
        diff_P = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
        draws_R_P = rng.integers(0, len(diff_P), size=(resamples, len(diff_P)))
        replicates_R += diff_P[draws_R_P].mean(axis=1)
        per_seed.append(float(diff_P.mean()))
        problems.append(len(diff_P))
    replicates_R /= len(pairs_by_seed)
    tail = (1.0 - confidence) / 2
    low, high = np.quantile(replicates_R, [tail, 1.0 - tail])
    over_seeds = mean_over_seeds(per_seed, confidence)
    return PairedDelta(
        delta=over_seeds.mean,
        seeds_low=over_seeds.low,
        seeds_high=over_seeds.high,
        problems_low=float(low),
        problems_high=float(high),
        per_seed=tuple(per_seed),
        problems=tuple(problems),
    )
