"""The toy world: deterministic, disjoint splits with a spread of difficulty; a systematic error only
in the pre-training text; a tokenizer that round-trips."""

from collections import Counter

import pytest

from sparse2dense.grading import grade_completion
from sparse2dense.sections import BaseSection, ToyTask
from sparse2dense.toy import build_tokenizer, difficulty_of, generate_task, worked_solution


def test_splits_are_deterministic_and_disjoint():
    task = ToyTask(num_base=300, num_labeled=50, num_unlabeled=50, num_test=40)
    a, b = generate_task(task, 3), generate_task(task, 3)
    assert a == b
    assert generate_task(task, 4) != a
    problems = [{r["problem"] for r in split} for split in a.values()]
    assert sum(len(p) for p in problems) == len(set().union(*problems))


def test_every_split_spans_the_difficulty_range():
    task = ToyTask(
        min_terms=2,
        max_terms=5,
        max_operand=99,
        num_base=800,
        num_labeled=400,
        num_unlabeled=400,
        num_test=400,
    )
    for name, split in generate_task(task, 0).items():
        counts = Counter(difficulty_of(r["problem"]) for r in split)
        assert set(counts) == {2, 3, 4, 5}, name
        assert min(counts.values()) > len(split) / 4 * 0.7, (name, counts)
        assert all(r["metadata"]["difficulty"] == difficulty_of(r["problem"]) for r in split)


def test_stopping_early_is_the_only_error_and_only_in_base():
    task = ToyTask(
        max_operand=99, num_base=400, num_labeled=50, num_unlabeled=50, num_test=40, base_noise=0.5
    )
    splits = generate_task(task, 0)
    for name in ("labeled", "test"):
        assert all(grade_completion(r["answer"], r["solution"]).correct for r in splits[name])
    wrong = [r for r in splits["base"] if not grade_completion(r["answer"], r["solution"]).correct]
    assert 0.35 < len(wrong) / len(splits["base"]) < 0.65
    for record in wrong:
        terms = tuple(record["metadata"]["terms"])
        assert record["solution"] == worked_solution(terms, stop_early=True)
        assert record["solution"].endswith(f"\\boxed{{{sum(terms[:-1])}}}")


def test_worked_solution_steps():
    assert worked_solution((12, 7, 25)) == r"12+7=19. 19+25=44. \boxed{44}"
    assert worked_solution((12, 7, 25), stop_early=True) == r"12+7=19. \boxed{19}"


def test_terms_range_is_validated():
    with pytest.raises(ValueError, match="min_terms"):
        ToyTask(min_terms=4, max_terms=3)


def test_tokenizer_round_trip_and_chat_template():
    tok = build_tokenizer()
    text = r"12+7=19. \boxed{19}"
    assert tok.decode(tok(text)["input_ids"]) == text
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "1+2=?"}], tokenize=False, add_generation_prompt=True
    )
    assert prompt.endswith("<|im_start|>assistant\n")


def test_student_pretraining_text_holds_only_the_short_sums():
    from sparse2dense.stages.base import pretraining_text

    task = ToyTask(
        min_terms=4, max_terms=8, max_operand=9, num_base=800, num_labeled=8, num_unlabeled=8, num_test=8
    )
    base = generate_task(task, seed=3)["base"]
    train = BaseSection(student_max_terms=6)
    short = pretraining_text(base, train.for_role("student"))
    assert {difficulty_of(r["problem"]) for r in short} == {4, 5, 6}
    assert short == [r for r in base if r["metadata"]["difficulty"] <= 6]
    assert pretraining_text(base, train.for_role("teacher")) == base
