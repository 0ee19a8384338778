"""teacher_rl: GRPO with the grading reward raises a toy teacher's reward and accuracy.

In the toy pre-training corpus 30% of the worked solutions stop one step early; sparse reward
removes that behaviour within a few dozen steps, which is the objective moving the right way.
"""

import pytest

from sparse2dense.config import load_config
from tests.conftest import MICRO, TOY

TEACHER = [
    "teacher.toy.hidden_size=128",
    "teacher.toy.num_hidden_layers=3",
    "teacher.toy.intermediate_size=256",
    "base.teacher_steps=250",
    "data.toy.min_terms=4",
    "data.toy.max_terms=5",
    "base.student_max_terms=5",
    "data.toy.max_operand=9",
    "data.toy.num_base=4000",
    "data.toy.base_noise=0.3",
    "data.toy.num_labeled=256",
    "data.toy.num_test=64",
    "teacher_rl.steps=24",
    "teacher_rl.prompts_per_step=16",
    "teacher_rl.num_generations=8",
    "teacher_rl.learning_rate=5e-5",
    "eval.samples_per_problem=8",
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
    metrics = summary["stages"]["teacher_rl"]["metrics"]
    assert metrics["reward_last_third"] > metrics["reward_first_third"]


def test_teacher_accuracy_rises_after_rl(summary):
    before = summary["eval"]["teacher_base"]["toy_test"]["avg@8"]
    after = summary["eval"]["teacher_rl"]["toy_test"]["avg@8"]
    assert after > before


def test_stage_uses_only_stage1_labels(summary):
    # 256 labeled problems, 20% held out: GRPO may read at most the 205 stage-1 answers.
    assert 0 < summary["labels"]["teacher_rl"] <= 205
