"""The label budget as a sweep dimension, the GRPO groups' outcome per difficulty, the per-difficulty
report tables and the bridge that reads the stage-1 prompts: planning and sharing, on hand-made
records with known answers."""

import json
from pathlib import Path

import pytest

from sparse2dense.config import ConfigError, load_config
from sparse2dense.data import save_records
from sparse2dense.pipeline import plan_keys
from sparse2dense.stages.data_prep import prepare
from sparse2dense.stages.grpo import (
    GROUP_STATS,
    GroupRecorder,
    group_stats,
    keep_groups_before,
    labeled_records,
)
from sparse2dense.sweep import arm_runs, load_sweep, sweep_plan
from tasks.reporting import ArmSeed, budget_rows, difficulty_rows, group_rows
from tests.conftest import TOY

SWEEP = """
name: budgets
base: TOY
seeds: [5, 6]
comparisons:
  - {a: full_bridge, b: direct_grpo}
  - {a: full_bridge, b: no_opd}
label_budgets: {budgets: [32, 128], arms: [full_bridge, direct_grpo]}
arms:
  full_bridge: {}
  no_opd: {disable: [opd]}
  direct_grpo:
    disable: [teacher_rl, warmup, opd]
    set: {student_rl.enabled: true, student_rl.recipe: teacher_rl}
"""


def _sweep(tmp_path: Path, text: str = SWEEP):
    path = tmp_path / "sweep.yaml"
    path.write_text(text.replace("TOY", str(TOY)))
    return load_sweep(path)


def test_budgets_spell_out_arms_and_comparisons_and_direct_grpo_takes_the_budget(tmp_path):
    sweep = _sweep(tmp_path)
    assert list(sweep.arms) == [
        "full_bridge",
        "no_opd",
        "direct_grpo",
        "full_bridge.labels32",
        "direct_grpo.labels32",
        "full_bridge.labels128",
        "direct_grpo.labels128",
    ]
    pairs = [(c.a, c.b) for c in sweep.comparisons]
    assert pairs == [
        ("full_bridge", "direct_grpo"),
        ("full_bridge", "no_opd"),
        ("full_bridge.labels32", "direct_grpo.labels32"),  # no_opd is not in the dimension
        ("full_bridge.labels128", "direct_grpo.labels128"),
    ]
    configs = {r.arm: r.config for r in arm_runs(sweep) if r.seed == 5}
    assert configs["full_bridge.labels32"].teacher_rl.max_labels == 32
    assert configs["full_bridge"].teacher_rl.max_labels is None
    # direct GRPO reads teacher_rl's recipe, the budget included
    assert configs["direct_grpo.labels128"].student_rl.max_labels == 128
    assert configs["direct_grpo.labels128"].student_rl.enabled


def test_budget_arms_share_everything_before_teacher_rl_and_nothing_across_seeds(tmp_path):
    runs = arm_runs(_sweep(tmp_path))
    keys = {(r.arm, r.seed): plan_keys(r.config) for r in runs}
    full, small = keys[("full_bridge", 5)], keys[("full_bridge.labels32", 5)]
    for stage in ("data_prep", "base/teacher", "base/student", "eval/teacher_base", "eval/student_base"):
        assert full[stage] == small[stage], stage
    for stage in ("teacher_rl", "teacher_rollouts", "warmup", "opd", "eval/student_final"):
        assert full[stage] != small[stage], stage
    assert keys[("direct_grpo.labels32", 5)]["student_rl"] != keys[("direct_grpo", 5)]["student_rl"]
    plan = sweep_plan(runs)
    # per seed: 11 stages of full_bridge; no_opd adds its final eval (its student is the warmup's);
    # direct_grpo adds student_rl and its eval; each budget adds teacher_rl + its eval + rollouts +
    # warmup + opd + final eval for the bridge and student_rl + eval for direct GRPO
    assert plan.distinct_stage_keys == 2 * (11 + 1 + 2 + 2 * (6 + 2))
    for labels in plan.shared.values():
        assert len({label.split("@")[1] for label in labels}) == 1


def test_a_budget_on_an_unknown_arm_or_twice_is_refused_naming_it(tmp_path):
    with pytest.raises(ConfigError, match=r"label_budgets.arms: \['nope'\] are not arms"):
        _sweep(tmp_path, SWEEP.replace("arms: [full_bridge, direct_grpo]}", "arms: [nope]}"))
    with pytest.raises(ConfigError, match="budgets must be distinct"):
        _sweep(tmp_path, SWEEP.replace("[32, 128]", "[32, 32]"))


def test_the_budget_takes_the_first_problems_so_budgets_nest(tmp_path):
    stage1 = [{"id": f"s{i}", "problem": f"{i}+1=?", "answer": str(i + 1)} for i in range(50)]
    heldout = [{"id": f"h{i}", "problem": f"{i}+2=?", "answer": str(i + 2)} for i in range(10)]
    save_records(tmp_path / "stage1.jsonl", stage1)
    save_records(tmp_path / "heldout.jsonl", heldout)
    small, large = labeled_records(tmp_path, "stage1", 0, 8), labeled_records(tmp_path, "stage1", 0, 32)
    assert [r["id"] for r in small] == [f"s{i}" for i in range(8)] and small == large[:8]
    assert len(labeled_records(tmp_path, "stage1", 0)) == 50
    replay = labeled_records(tmp_path, "replay", 3, 8)  # as many as the held-out set, from the budget
    assert len(replay) == 8 and {r["id"] for r in replay} <= {f"s{i}" for i in range(8)}


def test_the_recorder_counts_each_groups_outcome_per_difficulty_and_a_redone_step_once(tmp_path):
    def reward(completions, answer, **_):
        return [1.0 if c == a else 0.0 for c, a in zip(completions, answer, strict=True)]

    class Trainer:
        class state:  # noqa: N801 - stands for the trainer's state object
            global_step = 0

    recorder = GroupRecorder(reward, group_size=2, path=tmp_path / GROUP_STATS)
    recorder.trainer = Trainer
    # step 0: p1 (3 terms) all right, p2 (3 terms) mixed, p3 (5 terms) all wrong
    call = {
        "completions": ["1", "1", "2", "x", "x", "x"],
        "answer": ["1", "1", "2", "2", "3", "3"],
        "problem_id": ["p1", "p1", "p2", "p2", "p3", "p3"],
        "difficulty": [3, 3, 3, 3, 5, 5],
    }
    assert recorder(**call) == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    assert recorder.__name__ == "reward"
    Trainer.state.global_step = 1
    recorder(**call | {"completions": ["x"] * 6})  # step 1, first try: everything wrong
    path = tmp_path / GROUP_STATS
    keep_groups_before(path, str(tmp_path / "checkpoints" / "checkpoint-1"))  # resume from step 1
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [0]
    recorder(**call | {"completions": ["1", "x", "2", "2", "3", "x"]})  # step 1 redone after the resume
    stats = group_stats(tmp_path / GROUP_STATS)
    # 6 groups: step 0 (right, mixed, wrong) and the redone step 1 (mixed, right, mixed)
    assert stats["groups"] == 6
    assert stats["zero_std"] == pytest.approx(3 / 6)
    assert (stats["all_right"], stats["all_wrong"]) == (pytest.approx(2 / 6), pytest.approx(1 / 6))
    assert stats["zero_std_difficulty_3"] == pytest.approx(2 / 4)  # p1 right, p2 mixed, p1 mixed, p2 right
    assert stats["zero_std_difficulty_5"] == pytest.approx(1 / 2) and stats["groups_difficulty_5"] == 2
    assert group_stats(tmp_path / "none.jsonl") == {}
    keep_groups_before(path, None)  # a fresh start keeps nothing of an earlier try
    assert not path.exists()


def _summary(seed: int, arm: str, final: dict, base: dict, zero: dict | None) -> dict:
    """A run whose base models are shared by every arm of its seed (one key per seed) and whose
    final student and teacher RL stage are its own unless `zero` marks teacher RL as shared."""

    def acc(levels):
        return {"toy_test": {"avg@2": 0.5} | {f"acc_difficulty_{k}": v for k, v in levels.items()}}

    stages = {
        "eval/teacher_base": {"key": f"tb{seed}"},
        "eval/student_base": {"key": f"sb{seed}"},
        "eval/student_final": {"key": f"sf{seed}{arm}"},
    }
    if zero is not None:
        stages["teacher_rl"] = {
            "key": f"rl{seed}",
            "metrics": {"zero_std": 0.5, "all_right": 0.25, "all_wrong": 0.25, "groups": 40.0}
            | {f"zero_std_difficulty_{k}": v for k, v in zero.items()},
        }
    return {
        "eval": {"teacher_base": acc(base), "student_base": acc(base), "student_final": acc(final)},
        "stages": stages,
        "labels": {"total": 8},
    }


def test_the_report_tables_average_levels_over_seeds_and_show_shared_stages_once():
    zero1, zero2 = {4: 0.2, 8: 1.0}, {4: 0.4, 8: 0.8}
    runs = [
        ArmSeed("full", 1, _summary(1, "full", {4: 0.8, 8: 0.2}, {4: 0.4, 8: 0.0}, zero1), {}),
        ArmSeed("full", 2, _summary(2, "full", {4: 0.6, 8: 0.4}, {4: 0.2, 8: 0.0}, zero2), {}),
        ArmSeed("no_opd", 1, _summary(1, "no_opd", {4: 0.7, 8: 0.1}, {4: 0.4, 8: 0.0}, zero1), {}),
        ArmSeed("no_opd", 2, _summary(2, "no_opd", {4: 0.7, 8: 0.1}, {4: 0.2, 8: 0.0}, zero2), {}),
        ArmSeed("cold", 1, _summary(1, "cold", {4: 0.5, 8: 0.0}, {4: 0.4, 8: 0.0}, None), {}),
        ArmSeed("cold", 2, _summary(2, "cold", {4: 0.5, 8: 0.0}, {4: 0.2, 8: 0.0}, None), {}),
        ArmSeed("dead", 2, None, {}),
    ]
    rows = {(r["model"], r["arms"]): r for r in difficulty_rows(runs)}
    base = rows[("student_base (toy_test)", "full, no_opd, cold")]
    assert (base["seeds"], base["4"], base["8"]) == (2, "30.0", "0.0")  # one per seed, not per arm
    final = rows[("student_final (toy_test)", "full")]
    assert (final["seeds"], final["4"], final["8"]) == (2, "70.0", "30.0")
    assert rows[("student_final (toy_test)", "cold")]["8"] == "0.0"
    assert list(rows)[0][0] == "teacher_base (toy_test)" and len(rows) == 5
    groups = group_rows(runs)
    assert [(g["stage"], g["arms"], g["seeds"]) for g in groups] == [("teacher_rl", "full, no_opd", 2)]
    assert (groups[0]["zero-var 4"], groups[0]["zero-var 8"], groups[0]["zero-var all"]) == (
        "30.0",
        "90.0",
        "50.0",
    )


def test_budget_rows_put_each_arm_on_its_ledger_budget():
    def run(arm, labels, avg):
        summary = {
            "eval": {"student_final": {"bench": {"avg@2": avg, "avg@2_stderr": 0.01}}},
            "stages": {},
            "labels": {"total": labels},
        }
        return ArmSeed(arm, 1, summary, {})

    runs = [
        run("full", 400, 0.8),
        run("full.labels32", 32, 0.7),
        run("grpo.labels32", 32, 0.3),
        run("grpo", 400, 0.5),
    ]
    rows = budget_rows(runs, ["full", "grpo"])
    assert [(r["arm"], r["labels"], r["bench avg@2"]) for r in rows] == [
        ("full", 32, 0.7),
        ("full", 400, 0.8),
        ("grpo", 32, 0.3),
        ("grpo", 400, 0.5),
    ]


def test_the_bridge_reads_the_stage1_problems_without_their_labels():
    config = load_config(TOY, ["data.bridge_reads_stage1=true"])
    prepared = prepare(config.data, 5)
    stage1_ids = [r["id"] for r in prepared["stage1"]]
    unlabeled = prepared["unlabeled"]
    assert [r["id"] for r in unlabeled[: len(stage1_ids)]] == stage1_ids
    assert all("answer" not in r and "solution" not in r for r in unlabeled)
    plain = prepare(load_config(TOY, ["data.bridge_reads_stage1=false"]).data, 5)
    assert len(unlabeled) == len(plain["unlabeled"]) + len(stage1_ids)
    assert json.dumps(plain["stage1"]) == json.dumps(prepared["stage1"])


def test_the_mechanism_and_budget_plots_are_drawn(tmp_path):
    from tasks.reporting import render_budget_plot, render_mechanism_plot

    zero = {4: 0.2, 8: 1.0}
    runs = [
        ArmSeed("full", s, _summary(s, "full", {4: 0.8, 8: 0.2}, {4: 0.4, 8: 0.0}, zero), {}) for s in (1, 2)
    ]
    mechanism = render_mechanism_plot(difficulty_rows(runs), group_rows(runs), tmp_path / "mechanism.png")

    def run(arm, seed, labels, avg):
        summary = {
            "eval": {"student_final": {"bench": {"avg@2": avg, "avg@2_stderr": 0.01}}},
            "stages": {},
            "labels": {"total": labels},
        }
        return ArmSeed(arm, seed, summary, {})

    budget_runs = [
        run("full.labels32", 1, 32, 0.4),
        run("full.labels32", 2, 32, 0.6),
        run("full", 1, 512, 0.7),
    ]
    budget = render_budget_plot(budget_runs, ["full"], tmp_path / "budgets.png")
    for path in (mechanism, budget):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
