"""Stage keys: semantic fields change them, cosmetic ones do not; changes propagate downstream only."""

from pathlib import Path

from sparse2dense.config import load_config
from sparse2dense.pipeline import plan_keys, plan_stages

TOY = Path(__file__).resolve().parents[1] / "configs" / "toy.yaml"


def test_plan_order_and_optional_stages():
    names = [p.name for p in plan_stages(load_config(TOY))]
    assert (
        names.index("teacher_rl")
        < names.index("teacher_rollouts")
        < names.index("warmup")
        < names.index("opd")
    )
    assert "student_rl" not in names
    with_rl = [p.name for p in plan_stages(load_config(TOY, ["student_rl.enabled=true"]))]
    assert with_rl.index("opd") < with_rl.index("student_rl") < with_rl.index("eval/student_final")


def test_changing_opd_changes_only_opd_and_its_dependants():
    before, after = plan_keys(load_config(TOY)), plan_keys(load_config(TOY, ["opd.steps=3"]))
    changed = {name for name in before if before[name] != after[name]}
    assert changed == {"opd", "eval/student_final"}


def test_logging_cadence_does_not_change_keys():
    assert plan_keys(load_config(TOY)) == plan_keys(load_config(TOY, ["opd.logging_steps=7", "name=other"]))


def test_seed_changes_every_key():
    before, after = plan_keys(load_config(TOY)), plan_keys(load_config(TOY, ["seed=2"]))
    assert all(before[n] != after[n] for n in before)


def test_student_pretraining_text_is_in_the_students_key_only():
    """base.student_max_terms narrows the student's pre-training text: its base stage and everything
    downstream of the student change; the teacher's pre-training and RL do not."""
    before = plan_keys(load_config(TOY))
    after = plan_keys(load_config(TOY, ["base.student_max_terms=5"]))
    changed = {name for name in before if before[name] != after[name]}
    assert "base/student" in changed and "warmup" in changed and "eval/student_final" in changed
    assert not changed & {"data_prep", "base/teacher", "teacher_rl", "teacher_rollouts", "eval/teacher_rl"}
