"""The grading function shared by the reward and eval: one behaviour per test."""

import pytest

from sparse2dense.grading import (
    Verdict,
    correctness_reward,
    extract_boxed,
    grade_answer,
    grade_completion,
    normalize_answer,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"so \boxed{42}", "42"),
        (r"\boxed{1} then \boxed{2}", "2"),
        (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),
        (r"\fbox{7}", "7"),
        (r"answer: \boxed 9", "9"),
        ("no answer here", None),
        (r"\boxed{ok} \boxed{unbalanced", "ok"),
    ],
)
def test_extract_boxed(text, expected):
    assert extract_boxed(text) == expected


def test_normalization_strips_formatting():
    assert normalize_answer(r" \dfrac{1}{2}. ") == r"\frac{1}{2}"
    assert normalize_answer(r"90^\circ") == "90"
    assert normalize_answer(r"\text{5 cm}") == "5cm"
    assert normalize_answer("1,000") == "1000"


def test_string_match_is_fast_path():
    grade = grade_answer("65", "65")
    assert grade.verdict is Verdict.CORRECT and grade.reason == "normalized string match"


def test_numeric_equivalence():
    assert grade_answer(r"\frac{1}{2}", "0.5").correct
    assert not grade_answer("3", "4").correct


def test_symbolic_equivalence():
    assert grade_answer("x^2+1", "1+x^2").correct


def test_no_answer_verdict():
    assert grade_completion("3", "I think it is three").verdict is Verdict.NO_ANSWER


def test_guard_rejects_huge_exponent_quickly():
    grade = grade_answer("1", "9^{9^{9^{9}}}")
    assert grade.verdict is Verdict.WRONG and "guarded" in grade.reason


def test_reward_matches_grader():
    completions = [r"12+7=19. \boxed{19}", r"\boxed{18}", "none"]
    assert correctness_reward(completions, answer=["19", "19", "19"]) == [1.0, 0.0, 0.0]
