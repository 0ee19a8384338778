"""Eval statistics against brute force."""

import itertools
import math

import pytest

from sparse2dense.metrics import avg_at_k, maj_at_k, pass_at_k, summarize


@pytest.mark.parametrize(("n", "c", "k"), [(4, 0, 1), (4, 1, 2), (8, 3, 4), (5, 5, 3), (6, 2, 6)])
def test_pass_at_k_matches_enumeration(n, c, k):
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    brute = sum(any(samples[i] for i in s) for s in subsets) / len(subsets)
    assert pass_at_k(n, c, k) == pytest.approx(brute)


def test_pass_at_k_rejects_k_above_n():
    with pytest.raises(ValueError):
        pass_at_k(2, 1, 3)


def test_avg_at_k_mean_and_stderr():
    mean, se = avg_at_k([[True, False], [True, True], [False, False]])
    assert mean == pytest.approx(0.5)
    assert se == pytest.approx(math.sqrt(0.25 / 3))


def test_maj_at_k_uses_most_common_answer():
    assert maj_at_k(["3", "4", "4"], [True, False, False]) is False
    assert maj_at_k(["3", "3", "4"], [True, True, False]) is True
    assert maj_at_k([None, None], [False, False]) is False


def test_summarize_keys_carry_k():
    out = summarize([[True, False, False, True]], [["1", "2", "3", "1"]])
    assert out["avg@4"] == 0.5 and out["pass@4"] == 1.0 and out["maj@4"] == 1.0


def test_bootstrap_ci_brackets_the_mean_and_narrows_with_more_problems():
    from sparse2dense.metrics import bootstrap_ci

    small = [1.0, 0.0] * 10
    large = [1.0, 0.0] * 200
    low_s, high_s = bootstrap_ci(small)
    low_l, high_l = bootstrap_ci(large)
    assert low_s < 0.5 < high_s and low_l < 0.5 < high_l
    assert high_l - low_l < high_s - low_s
    assert bootstrap_ci([1.0] * 5) == (1.0, 1.0)
