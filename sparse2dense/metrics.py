"""Evaluation statistics over a [problems x samples] correctness table: avg@k with standard error
and a percentile bootstrap CI over problems, pass@k (the unbiased estimator of Chen et al. 2021) and
maj@k (majority vote over extracted answers).
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence


def avg_at_k(correct_P_K: Sequence[Sequence[bool]]) -> tuple[float, float]:
    """Mean accuracy over all samples, and the standard error over problems."""
    per_problem = [sum(row) / len(row) for row in correct_P_K]
    n = len(per_problem)
    if n == 0:
        return 0.0, 0.0
    mean = sum(per_problem) / n
    if n == 1:
        return mean, 0.0
    var = sum((x - mean) ** 2 for x in per_problem) / (n - 1)
    return mean, math.sqrt(var / n)


def pass_at_k(num_samples: int, num_correct: int, k: int) -> float:
    """Probability that at least one of k samples drawn without replacement is correct."""
    if k > num_samples:
        raise ValueError(f"k={k} exceeds the {num_samples} samples drawn")
    if num_samples - num_correct < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(num_samples - num_correct + 1, num_samples + 1))


def maj_at_k(answers_K: Sequence[str | None], correct_K: Sequence[bool]) -> bool:
    """Whether the most frequent extracted answer (ties: first seen) is a correct one."""
    votes = Counter(a for a in answers_K if a is not None)
    if not votes:
        return False
    top = votes.most_common(1)[0][0]
    return any(c for a, c in zip(answers_K, correct_K, strict=True) if a == top)


def bootstrap_ci(
    per_problem: Sequence[float], confidence: float = 0.95, resamples: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean, resampling problems (samples stay with their problem)."""
    n = len(per_problem)
    if n == 0:
        return 0.0, 0.0
    rng = random.Random(seed)
    means = sorted(sum(per_problem[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    tail = (1.0 - confidence) / 2
    return means[int(tail * (resamples - 1))], means[int(math.ceil((1 - tail) * (resamples - 1)))]


def summarize(
    correct_P_K: Sequence[Sequence[bool]], answers_P_K: Sequence[Sequence[str | None]]
) -> dict[str, float]:
    k = len(correct_P_K[0]) if correct_P_K else 0
    mean, stderr = avg_at_k(correct_P_K)
    low, high = bootstrap_ci([sum(r) / len(r) for r in correct_P_K])
    n = max(len(correct_P_K), 1)
    return {
        f"avg@{k}": mean,
        f"avg@{k}_stderr": stderr,
        f"avg@{k}_ci95_low": low,
        f"avg@{k}_ci95_high": high,
        f"pass@{k}": sum(pass_at_k(k, sum(r), k) for r in correct_P_K) / n,
        f"maj@{k}": sum(maj_at_k(a, c) for a, c in zip(answers_P_K, correct_P_K, strict=True)) / n,
        "num_problems": float(len(correct_P_K)),
    }


def avg_metric_name(metrics: dict[str, float]) -> str:
    """The `avg@k` key of a benchmark's summary (k varies with the config)."""
    return next(name for name in metrics if name.startswith("avg@") and name[4:].isdigit())
