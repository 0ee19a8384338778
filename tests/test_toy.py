"""The toy world: deterministic, disjoint splits; a tokenizer that round-trips."""

from sparse2dense.config import ToyTask
from sparse2dense.grading import grade_completion
from sparse2dense.toy import build_tokenizer, generate_task


def test_splits_are_deterministic_and_disjoint():
    task = ToyTask(num_base=300, num_labeled=50, num_unlabeled=50, num_test=40)
    a, b = generate_task(task, 3), generate_task(task, 3)
    assert a == b
    problems = [{r["problem"] for r in split} for split in a.values()]
    assert sum(len(p) for p in problems) == len(set().union(*problems))


def test_clean_solutions_grade_correct_and_noise_only_in_base():
    task = ToyTask(num_base=400, num_labeled=50, num_unlabeled=50, num_test=40, base_noise=0.5)
    splits = generate_task(task, 0)
    for name in ("labeled", "test"):
        assert all(grade_completion(r["answer"], r["solution"]).correct for r in splits[name])
    wrong = sum(not grade_completion(r["answer"], r["solution"]).correct for r in splits["base"])
    assert 0.35 < wrong / len(splits["base"]) < 0.65


def test_tokenizer_round_trip_and_chat_template():
    tok = build_tokenizer()
    text = r"12+7=19. \boxed{19}"
    assert tok.decode(tok(text)["input_ids"]) == text
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "1+2=?"}], tokenize=False, add_generation_prompt=True
    )
    assert prompt.endswith("<|im_start|>assistant\n")
