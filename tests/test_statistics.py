"""The sweep report's statistics on hand-made scores with known answers: per-problem scores from eval
records, the t interval over seeds, and the paired bootstrap over problems pooled over seeds."""

import math

import pytest

from sparse2dense.statistics import mean_over_seeds, paired_delta, paired_scores, problem_scores


def _record(pid: str, verdicts: list[str]) -> dict:
    return {"id": pid, "answer": "3", "samples": [{"verdict": v, "pred": "3"} for v in verdicts]}


def test_a_problems_score_is_its_fraction_of_correct_samples():
    records = [
        _record("p1", ["correct", "wrong", "correct", "no_answer"]),
        _record("p2", ["timeout", "wrong", "wrong", "wrong"]),
        _record("p3", ["correct"] * 4),
    ]
    assert problem_scores(records) == {"p1": 0.5, "p2": 0.0, "p3": 1.0}
    with pytest.raises(ValueError, match="'p4' has no samples"):
        problem_scores([_record("p4", [])])


def test_mean_over_seeds_uses_the_t_interval():
    estimate = mean_over_seeds([0.5, 0.6, 0.7])
    # sd 0.1, t_{2, 0.975} = 4.3027: half width 4.3027 * 0.1 / sqrt(3) = 0.2484
    assert estimate.mean == pytest.approx(0.6)
    assert estimate.low == pytest.approx(0.6 - 0.24841, abs=1e-4)
    assert estimate.high == pytest.approx(0.6 + 0.24841, abs=1e-4)
    same = mean_over_seeds([0.4, 0.4])
    assert (same.low, same.high) == (pytest.approx(0.4), pytest.approx(0.4))
    one = mean_over_seeds([0.3])
    assert one.mean == 0.3 and one.low is None and one.high is None


def test_identical_arms_give_zero_delta_and_not_significant():
    scores = [0.0, 0.25, 1.0, 0.5, 0.75, 0.0, 1.0, 0.5]
    result = paired_delta([(scores, scores), (scores[::-1], scores[::-1])])
    assert result.delta == 0.0 and result.low == 0.0 and result.high == 0.0
    assert result.per_seed == (0.0, 0.0)
    assert not result.significant


def test_b_right_on_every_problem_a_misses_gives_the_known_delta():
    a = [1.0] * 20 + [0.0] * 20  # a solves half the problems
    b = [1.0] * 40  # b solves those and every one a misses
    result = paired_delta([(b, a)])
    assert result.delta == pytest.approx(0.5)
    assert 0.0 < result.low < 0.5 < result.high < 1.0
    assert result.significant
    reverse = paired_delta([(a, b)])
    assert reverse.delta == pytest.approx(-0.5) and reverse.high < 0.0 and reverse.significant


def test_pooling_averages_the_per_seed_deltas_with_equal_weight():
    # seed 1: b gains 1.0 on 10 of 40 problems (+0.25); seed 2: no difference on 10 problems.
    seed1 = ([1.0] * 40, [1.0] * 30 + [0.0] * 10)
    seed2 = ([0.5] * 10, [0.5] * 10)
    result = paired_delta([seed1, seed2])
    assert result.per_seed == (pytest.approx(0.25), 0.0)
    assert result.delta == pytest.approx(0.125)  # not 10 / 50 = 0.2 as one pool of problems would give
    assert result.problems == (40, 10)
    # seed 2 adds no spread: every replicate is half of seed 1's bootstrap mean
    alone = paired_delta([seed1])
    assert result.low == pytest.approx(alone.low / 2) and result.high == pytest.approx(alone.high / 2)


def test_opposite_seeds_cancel_to_not_significant():
    up = ([1.0] * 30, [0.0] * 30)
    down = ([0.0] * 30, [1.0] * 30)
    result = paired_delta([up, down])
    assert result.delta == 0.0 and result.per_seed == (1.0, -1.0)
    assert not result.significant


def test_a_noisy_small_gain_is_not_significant_and_the_rng_is_fixed():
    a = [1.0, 0.0] * 10
    b = [0.0, 1.0] * 9 + [0.0, 0.0]  # a ahead on one problem out of 20
    first, second = paired_delta([(a, b)]), paired_delta([(a, b)])
    assert first == second  # a report is reproducible from its records
    assert first.delta == pytest.approx(0.05)
    assert first.low < 0.0 < first.high and not first.significant
    assert paired_delta([(a, b)], rng_seed=1) != first


def test_pairing_refuses_different_problem_sets_and_bad_input():
    a_scores, b_scores = paired_scores({"p2": 1.0, "p1": 0.0}, {"p1": 0.5, "p2": 0.25})
    assert (a_scores, b_scores) == ([0.0, 1.0], [0.5, 0.25])
    with pytest.raises(ValueError, match=r"different problems: \['p3'\] vs \['p2'\]"):
        paired_scores({"p1": 1.0, "p3": 0.0}, {"p1": 0.0, "p2": 1.0})
    with pytest.raises(ValueError, match="equal, non-empty"):
        paired_delta([([1.0, 0.0], [1.0])])
    with pytest.raises(ValueError, match="at least one seed"):
        paired_delta([])
    assert math.isclose(paired_delta([([1.0], [0.0])]).delta, 1.0)
