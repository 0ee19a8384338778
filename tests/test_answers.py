"""Locating and normalizing answers: one notation per case, all plain string work (no sympy)."""

import pytest

from sparse2dense.answer_extraction import MAX_SEARCHED_CHARS, answer_candidates, boxed_answers
from sparse2dense.answer_normalization import align_forms, as_number, normalize_answer, numbers_match
from sparse2dense.grading import Verdict, grade


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"so \boxed{1} and \boxed{2} and \boxed{3}", ["3", "1, 2, 3"]),
        (r"$\boxed{k = 45} \quad \text{and} \quad \boxed{n = 2}$", ["n = 2", "k = 45, n = 2"]),
        (r"\(y_1 = \boxed{x+1}\) and \(y_2 = \boxed{x-1}\)", ["x-1", "x+1, x-1"]),
        (r"\boxed{3} then \boxed{4}", ["4"]),
        (r"\boxed{4} unclosed \boxed{5", ["4"]),
        (r"\boxed{5", []),
    ],
)
def test_boxed_answers_join_boxes_only_across_connectors(text, expected):
    assert boxed_answers(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"Final Answer: The final answer is $\frac{10}{9}$. I hope it is correct.", r"\frac{10}{9}"),
        (r"Therefore $x \geq 5$ is the solution.", r"x \geq 5"),
        ("So, the probability that Alice wins the game is 2/3. <|im_start|>user", "2/3"),
        ("Final Answer: The largest $n$ is 34.", "34"),
        ("Thus there are 12 sequences that meet the three conditions.", "12"),
        (r"Answer \[ 9 \]", "9"),
        ("Solving, x = 5.", "5"),
        ("**Final Answer**\n\\[ 7 \\]", "7"),
        ("So the total is 17 apples.<|im_end|>", "17"),
        ("The answer is 3 pi", "3 pi"),
    ],
)
def test_answer_stated_without_a_box(text, expected):
    assert answer_candidates(text)[-1] == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("x" * MAX_SEARCHED_CHARS + r" so \boxed{7}.", ["7"]),
        ("x " * MAX_SEARCHED_CHARS + "So the total is 17 apples." + "<|endoftext|>" * 1000, ["17"]),
    ],
)
def test_long_outputs_are_read_from_their_end(text, expected):
    assert answer_candidates(text)[:1] == expected


def test_a_box_before_the_searched_end_is_not_read():
    assert boxed_answers(r"\boxed{7}" + " and" * MAX_SEARCHED_CHARS) == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"x \in [-2,7]", [r"x \in [-2,7]"]),
        ("28 percent", ["28 percent", "28"]),
        (r"$\frac12$", [r"$\frac12$"]),
    ],
)
def test_a_bare_answer_is_its_own_first_candidate(text, expected):
    assert answer_candidates(text) == expected


def test_final_answer_statement_after_a_box_is_a_candidate():
    text = r"interest $= \boxed{255}$, so she has $10,455. Final Answer: The final answer is $10,455$."
    assert answer_candidates(text) == ["255", "10,455"]


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        (r"15\mbox{ cm}^2", "15"),
        ("125 miles", "125"),
        (r"\$10", "10"),
        ("1,000.99€", "1000.99"),
        ("2m^2", "2m^{2}"),
        ("28 percent", r"28\%"),
        (r"10{,}000", "10000"),
        (r"56,\!01,\!78", "560178"),
        ("1,234,567", "1234567"),
        ("32, 349", "32,349"),
        ("3 1/2", "7/2"),
        ("Six", "6"),
        (r"\text{YES}", "yes"),
        (r"\mathcal{B}", "B"),
        ("2^10", "2^{10}"),
        ("x**2", "x^{2}"),
        ("x <= 2", r"x\le2"),
        (r"5 \geq x", r"5\ge x"),
        (r"\left[\begin{array}{cc}1 & 2 \\ 3 & 4\end{array}\right]", r"\begin{pmatrix}1&2\\3&4\end{pmatrix}"),
        (r"p = -1 \text{ and } p = \dfrac{15}{8}", r"p=-1,p=\frac{15}{8}"),
        ("19, 46, and 82", "19,46,82"),
    ],
)
def test_normalize_answer(raw, canonical):
    assert normalize_answer(raw) == canonical


@pytest.mark.parametrize(
    ("gold", "pred", "aligned"),
    [
        ("5", "x=5", ("5", "5")),
        (r"x=-5,p=\frac{14}{3}", r"-5,\frac{14}{3}", (r"-5,\frac{14}{3}", r"-5,\frac{14}{3}")),
        ("[-2,7]", r"x\in[-2,7]", ("[-2,7]", "[-2,7]")),
        ("[2,5)", r"2\le x<5", ("[2,5)", "[2,5)")),
        (r"(-\infty,3)", "x<3", (r"(-\infty,3)", r"(-\infty,3)")),
        ("7=11a+c", "11a+c", ("7=11a+c", "11a+c")),
        ("x<1", "-x>-1", ("x<1", "-x>-1")),
    ],
)
def test_align_forms(gold, pred, aligned):
    assert align_forms(gold, pred) == aligned


@pytest.mark.parametrize(
    ("gold", "pred", "equal"),
    [
        ("1200", "1.2e3", True),
        (r"6.02\times10^{23}", "602000000000000000000000", True),
        (r"\frac{1}{12}", "0.0833333333333333", True),
        (r"\frac{1}{3}", "0.333333", True),
        (r"\frac{1}{3}", "0.3333", False),
        ("5", "5.001", False),
    ],
)
def test_numbers_match(gold, pred, equal):
    assert numbers_match(as_number(gold), as_number(pred), gold, pred) is equal


@pytest.mark.parametrize(
    ("gold", "pred", "verdict", "reason"),
    [
        ("1000.99", "1000,99", Verdict.CORRECT, "numeric comparison"),
        ("0.111", "0,111", Verdict.CORRECT, "numeric comparison"),
        ("-2.1", "-2, 1", Verdict.WRONG, "a list against a single number"),
        ("32349", r"is $\boxed{32, 349}$", Verdict.WRONG, "a list against a single number"),
        ("E", "E'", Verdict.WRONG, "prime marks differ"),
        ("3, 4", r"\boxed{3} and \boxed{4}", Verdict.CORRECT, "normalized string match"),
        ("4", r"\boxed{3} and \boxed{4}", Verdict.CORRECT, "normalized string match"),
        (r"28\%", r"$\boxed{28 percent}", Verdict.CORRECT, "normalized string match"),
        ("[2,5)", r"2 \le x < 5", Verdict.CORRECT, "normalized string match"),
    ],
)
def test_grade_without_sympy(gold, pred, verdict, reason):
    result = grade(gold, pred)
    assert (result.verdict, result.reason, result.symbolic) == (verdict, reason, False)
