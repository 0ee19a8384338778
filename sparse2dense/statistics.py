"""The statistics a sweep report rests on: an arm's mean over seeds, and paired deltas between arms.

A problem's score is its mean correctness over its k eval samples (`problem_scores`). Seeds are the
replicates of an arm: its result is the mean of the per-seed avg@k with a Student-t interval
(`mean_over_seeds`). Two arms are compared on the same problems, so the comparison is paired: within a
seed both arms saw the same eval set, and problem i's score under arm a is paired with its score under
arm b (`paired_delta`, a paired bootstrap over problems within each seed, pooled over seeds). Every
random draw comes from a fixed RNG seed, so a report is reproducible from its records.
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
    """Mean of (a - b) and its bootstrap CI; `per_seed` holds each seed's own mean difference."""

    delta: float
    low: float
    high: float
    per_seed: tuple[float, ...]
    problems: tuple[int, ...]

    @property
    def significant(self) -> bool:
        """The interval excludes 0."""
        return not self.low <= 0.0 <= self.high


def paired_delta(
    pairs_by_seed: Sequence[tuple[Sequence[float], Sequence[float]]],
    confidence: float = 0.95,
    resamples: int = 2000,
    rng_seed: int = 0,
) -> PairedDelta:
    """Paired bootstrap of mean(a) - mean(b) over problems, pooled over seeds.

    `pairs_by_seed[s]` is (a's scores, b's scores) on seed s's problems, problem i at index i in both.
    Point estimate: the mean over seeds (equal weight) of each seed's mean paired difference d_s.
    One bootstrap replicate draws, independently in every seed, n_s problems with replacement from
    that seed's n_s, takes the mean difference of the drawn problems, and averages those over seeds
    with the same equal weights. The CI is the percentile interval of `resamples` replicates, drawn
    from a generator seeded with `rng_seed`. Seed-to-seed training variation enters only through
    the seeds present; with one seed the CI covers problem sampling alone.
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
    return PairedDelta(
        delta=sum(per_seed) / len(per_seed),
        low=float(low),
        high=float(high),
        per_seed=tuple(per_seed),
        problems=tuple(problems),
    )
