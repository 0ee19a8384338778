"""teacher_rl: GRPO with the grading reward raises a toy teacher's reward and accuracy, each by
several standard errors.

The world makes RL's effect large on any CPU: sums of 4-5 terms up to 5, whose arithmetic the
pre-trained teacher gets right, while 70% of its pre-training solutions stop one step early. That
coin comes from the data, so every run's teacher starts near a third (33-34% measured) and sparse
reward removes the coin (66-70% after 24 steps). GRPO samples at the eval's temperature, where the
arithmetic holds, so the reward singles out the early stop.
"""

import pytest

from sparse2dense.config import load_config
from tests.conftest import MICRO, TOY
from tests.effects import MARGIN, eval_gain, metric_history, unpaired_gain

# About two minutes (500 pre-training steps, 24 GRPO steps of 128 completions, two 4-sample evals):
# run with -m slow, as tests/test_paper_orderings.py, which also asserts GRPO's gain in its sweep.
pytestmark = pytest.mark.slow

TEACHER = [
    "teacher.toy.hidden_size=64",
    "teacher.toy.num_hidden_layers=2",
    "teacher.toy.intermediate_size=128",
    "base.teacher_steps=500",
    "base.student_steps=1",  # the student plays no part here
    "data.toy.min_terms=4",
    "data.toy.max_terms=5",
    "base.student_max_terms=4",
    "data.toy.max_operand=5",
    "data.toy.num_base=900",
    "data.toy.base_noise=0.7",
    "data.toy.num_labeled=192",
    "data.toy.num_unlabeled=16",
    "data.toy.num_test=160",
    "teacher_rl.steps=24",
    "teacher_rl.prompts_per_step=16",
    "teacher_rl.num_generations=8",
    "teacher_rl.learning_rate=5e-5",
    "teacher_rl.temperature=0.7",
    "teacher_rl.max_completion_length=48",
    "eval.samples_per_problem=4",
    "eval.max_new_tokens=48",
    "warmup.enabled=false",
    "opd.enabled=false",
]


@pytest.fixture(scope="module")
def summary(prefect_server, tmp_path_factory):
    from flows.post_train import post_train

    work = tmp_path_factory.mktemp("grpo")
    paths = [f"store_dir={work / 'store'}", f"runs_dir={work / 'runs'}"]
    return post_train(load_config(TOY, [*MICRO, *TEACHER, *paths]))


def test_grpo_reward_rises(summary):
    """The last third of the reward curve above the first, steps as the units."""
    metrics = summary["stages"]["teacher_rl"]["metrics"]
    rewards = metric_history(summary, "teacher_rl", "reward")  # one per step, 128 completions each
    third = len(rewards) // 3
    rise = unpaired_gain(rewards[-third:], rewards[:third])
    assert rise.gain == pytest.approx(metrics["reward_last_third"] - metrics["reward_first_third"])
    assert rise.margin >= MARGIN, str(rise)


def test_teacher_accuracy_rises_after_rl(summary):
    """avg@4 on 160 test problems, paired problem by problem."""
    gain = eval_gain(summary, "eval/teacher_rl", "eval/teacher_base")
    before = summary["eval"]["teacher_base"]["toy_test"]["avg@4"]
    after = summary["eval"]["teacher_rl"]["toy_test"]["avg@4"]
    assert gain.gain == pytest.approx(after - before)
    assert gain.margin >= MARGIN, str(gain)


def test_stage_uses_only_stage1_labels(summary):
    # 192 labeled problems, 20% held out: GRPO may read at most the 154 stage-1 answers.
    assert 0 < summary["labels"]["teacher_rl"] <= 154
