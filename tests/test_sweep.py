"""Ablation sweeps: the shipped sweep files and their arms, seeds as a dimension of the plan, the
shared GRPO recipe, the label-budget rule, the report's paired rows, and a micro sweep whose arms
share every common stage through the cache and report in all three places."""

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from sparse2dense.config import ConfigError, load_config
from sparse2dense.ledger import Ledger, compare_budgets
from sparse2dense.pipeline import plan_keys
from sparse2dense.schema import semantic_dump
from sparse2dense.sections import GRPO_RECIPE
from sparse2dense.sweep import (
    Arm,
    Comparison,
    SweepSpec,
    arm_configs,
    arm_overrides,
    arm_runs,
    load_sweep,
    sweep_plan,
)
from tasks.reporting import ArmSeed, comparison_rows, paired_deltas, render_sweep_plot, sweep_rows
from tasks.stages import STAGE_TAG
from tests.conftest import MICRO, ROOT, TOY
from tests.observe import KillAtCheckpoint, finished_task_runs, most_at_once

SWEEPS = sorted((ROOT / "configs" / "sweeps").glob("*.yaml"))
TOY_SWEEP = ROOT / "configs" / "sweeps" / "toy-ablations.yaml"
PAPER_ARMS = {
    "full_bridge",
    "raw_teacher",
    "no_warmup",
    "no_opd",
    "direct_grpo",
    "sft_warmup",
    "stage4_heldout",
    "stage4_replay",
}


def _recipe(section) -> dict:
    return {f: getattr(section, f) for f in GRPO_RECIPE}


# The real-model sweep holds the key arms only (a CPU budget); the ablation sweeps hold all of them.
KEY_ARMS = {"full_bridge", "raw_teacher", "direct_grpo"}
ARMS_OF = {"smollm2-arms.yaml": KEY_ARMS}


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.name)
def test_shipped_sweeps_validate_and_hold_the_papers_arms(path):
    sweep = load_sweep(path)
    assert set(sweep.arms) >= ARMS_OF.get(path.name, PAPER_ARMS)
    configs = arm_configs(sweep)
    assert not configs["raw_teacher"].teacher_rl.enabled
    if "sft_warmup" in sweep.arms:
        assert configs["sft_warmup"].warmup.objective == "sft"
        assert configs["stage4_replay"].student_rl.labels == "replay"
    direct = configs["direct_grpo"]
    assert direct.student_rl.enabled and direct.student_rl.labels == "stage1"
    assert not (direct.teacher_rl.enabled or direct.warmup.enabled or direct.opd.enabled)
    # direct GRPO runs teacher RL's recipe: same steps, lr, group, batch, length, labels
    assert _recipe(direct.student_rl) == _recipe(configs["full_bridge"].teacher_rl)


def test_toy_sweep_has_the_cold_and_sft_only_arms_on_matching_recipes():
    sweep = load_sweep(TOY_SWEEP)
    configs = arm_configs(sweep)
    cold, bridged = configs["cold_heldout"], configs["stage4_heldout"]
    assert not (cold.teacher_rl.enabled or cold.warmup.enabled or cold.opd.enabled)
    assert cold.student_rl.enabled and cold.student_rl.labels == "heldout"
    assert semantic_dump(cold.student_rl) == semantic_dump(bridged.student_rl)
    sft_only = configs["sft_only"]
    assert sft_only.warmup.enabled and sft_only.warmup.objective == "sft" and not sft_only.opd.enabled
    assert sft_only.teacher_rl.enabled and not sft_only.student_rl.enabled
    named = {(c.a, c.b) for c in sweep.comparisons}
    assert {
        ("direct_grpo", "raw_teacher"),
        ("full_bridge", "direct_grpo"),
        ("full_bridge", "no_warmup"),
        ("full_bridge", "no_opd"),
        ("stage4_heldout", "stage4_replay"),
        ("stage4_heldout", "cold_heldout"),
    } <= named


def test_the_student_takes_teacher_rls_recipe_however_it_is_tuned():
    sweep = load_sweep(TOY_SWEEP, ["teacher_rl.steps=7", "teacher_rl.learning_rate=2e-4"])
    direct = arm_configs(sweep, ["direct_grpo"])["direct_grpo"]
    assert (direct.student_rl.steps, direct.student_rl.learning_rate) == (7, 2e-4)
    assert _recipe(direct.student_rl) == _recipe(direct.teacher_rl)
    cfg = load_config(TOY, ["student_rl.recipe=teacher_rl", "teacher_rl.num_generations=4"])
    assert cfg.student_rl.num_generations == 4 and cfg.student_rl.labels == "stage1"
    assert type(cfg).model_validate(cfg.model_dump(mode="json")) == cfg  # a round trip keeps it
    own = load_config(TOY, ["teacher_rl.steps=7"])
    assert own.student_rl.steps == 40  # without the recipe, student_rl keeps its own fields
    with pytest.raises(ConfigError, match="teacher_rl.recipe must be 'own'"):
        load_config(TOY, ["teacher_rl.recipe=teacher_rl"])


def test_a_hand_copied_recipe_field_or_a_seed_in_an_arm_is_refused(tmp_path):
    text = "name: s\nbase: TOY\narms:\n  a: {set: {student_rl.recipe: teacher_rl, student_rl.steps: 9}}\n"
    with pytest.raises(ConfigError, match=r"arms\.a.*takes \['steps'\] from teacher_rl"):
        load_sweep(_write(tmp_path, text))
    with pytest.raises(ConfigError, match=r"arms\.a.*seeds are the sweep's own dimension"):
        load_sweep(_write(tmp_path, "name: s\nbase: TOY\narms:\n  a: {set: {seed: 3}}\n"))


def test_seeds_multiply_the_runs_and_arms_share_stages_only_within_a_seed():
    one = sweep_plan(arm_runs(load_sweep(TOY_SWEEP, seeds=[42])))
    # data_prep, both base models, their evals, teacher RL and its eval are common to most arms.
    assert one.naive_stage_count == sum(one.stages_per_run.values()) == 98
    assert one.distinct_stage_keys == 30
    assert max(len(runs) for runs in one.shared.values()) == 10
    sweep = load_sweep(TOY_SWEEP, seeds=[1, 2, 3])
    runs = arm_runs(sweep)
    assert [(r.arm, r.seed) for r in runs[:2]] == [("full_bridge", 1), ("raw_teacher", 1)]
    three = sweep_plan(runs)
    assert three.naive_stage_count == 3 * 98 and three.distinct_stage_keys == 3 * 30
    for key, labels in three.shared.items():  # a stage is shared by arms of one seed, never across seeds
        assert len({label.split("@")[1] for label in labels}) == 1, key
    keys = {(r.arm, r.seed): plan_keys(r.config) for r in runs}
    assert keys[("full_bridge", 1)]["data_prep"] == keys[("no_opd", 1)]["data_prep"]
    assert keys[("full_bridge", 1)]["teacher_rl"] == keys[("stage4_replay", 1)]["teacher_rl"]
    assert keys[("full_bridge", 1)]["data_prep"] != keys[("full_bridge", 2)]["data_prep"]


def test_an_arm_at_a_seed_has_the_keys_of_the_single_run_with_that_seed():
    sweep = load_sweep(TOY_SWEEP, seeds=[42, 7])
    for run in arm_runs(sweep):
        alone = load_config(TOY, [*arm_overrides(sweep.arms[run.arm]), f"seed={run.seed}"])
        assert plan_keys(run.config) == plan_keys(alone), run.label
    base = arm_runs(load_sweep(TOY_SWEEP, seeds=[]), ["full_bridge"])
    assert [r.seed for r in base] == [load_config(TOY).seed]  # no seeds: the base config's own seed
    assert plan_keys(base[0].config) == plan_keys(load_config(TOY))  # what `s2d run` computes


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(text.replace("TOY", str(TOY)))
    return path


def test_a_bad_arm_names_the_arm_and_the_field(tmp_path):
    path = _write(tmp_path, "name: s\nbase: TOY\narms:\n  a: {}\n  b: {set: {opd.stepz: 3}}\n")
    with pytest.raises(ConfigError, match=r"(?s)opd\.stepz.*arms\.b"):
        load_sweep(path)


def test_a_sweep_file_error_names_the_field(tmp_path):
    with pytest.raises(ConfigError, match=r"arms\.a\.disable\.0"):
        load_sweep(_write(tmp_path, "name: s\nbase: TOY\narms:\n  a: {disable: [eval]}\n"))
    with pytest.raises(ConfigError, match="reference arm 'zz'"):
        load_sweep(_write(tmp_path, "name: s\nbase: TOY\nreference: zz\narms:\n  a: {}\n"))
    with pytest.raises(ConfigError, match="base config not found"):
        load_sweep(_write(tmp_path, "name: s\nbase: nowhere.yaml\narms:\n  a: {}\n"))
    with pytest.raises(ConfigError, match=r"comparisons\.0\.b: 'zz' is not one of"):
        load_sweep(_write(tmp_path, "name: s\nbase: TOY\ncomparisons: [{a: a, b: zz}]\narms:\n  a: {}\n"))
    with pytest.raises(ConfigError, match="seeds must be distinct"):
        load_sweep(_write(tmp_path, "name: s\nbase: TOY\nseeds: [1, 1]\narms:\n  a: {}\n"))


def test_budgets_must_match_to_compare():
    verdicts = compare_budgets({"full": 64, "same": 64, "more": 128}, reference="full")
    assert verdicts["full"] is None and verdicts["same"] is None
    assert verdicts["more"] == "label budget 128 vs 64 for full"
    ledger = Ledger()
    ledger.add("teacher_rl", "stage1", 64)
    ledger.add("student_rl", "heldout", 16)
    assert ledger.total == 80 and ledger.by_stage() == {"teacher_rl": 64, "student_rl": 16}
    with pytest.raises(ValueError, match="negative"):
        ledger.add("x", "stage1", -1)


def _run(arm: str, seed: int, scores: list[float] | None, labels: int, ids: str = "p") -> ArmSeed:
    """An arm at a seed whose final student scored `scores` on problems p0, p1, ...; None: failed."""
    if scores is None:
        return ArmSeed(arm, seed, None, {})
    avg = sum(scores) / len(scores)
    m = {"avg@4": avg, "avg@4_stderr": 0.01, "avg@4_ci95_low": avg - 0.02, "avg@4_ci95_high": avg + 0.02}
    summary = {
        "eval": {"student_final": {"bench": m}},
        "labels": {"total": labels},
        "stages": {"a": {"status": "computed"}, "b": {"status": "cached"}},
    }
    return ArmSeed(arm, seed, summary, {"bench": {f"{ids}{i}": s for i, s in enumerate(scores)}})


HALF = [1.0] * 10 + [0.0] * 10  # right on the first half of the problems


def _report(runs, reference="ref", pairs=()):
    budgets = {r.arm: r.summary["labels"]["total"] for r in runs if r.summary}
    verdicts = compare_budgets(budgets, reference)
    vs_ref = [(a, reference) for a, v in verdicts.items() if a != reference and v is None]
    deltas = paired_deltas(runs, vs_ref + list(pairs))
    rows = {r["arm"]: r for r in sweep_rows(runs, reference, verdicts, deltas)}
    return rows, deltas


def test_report_rows_pair_arms_over_seeds_and_refuse_different_budgets():
    runs = [
        *(_run("ref", s, HALF, 64) for s in (1, 2, 3)),
        *(_run("same", s, HALF, 64) for s in (1, 2, 3)),  # identical to ref
        *(_run("better", s, [1.0] * 20, 64) for s in (1, 2, 3)),  # right where ref is wrong
        *(_run("more", s, [1.0] * 20, 80) for s in (1, 2, 3)),
        _run("flaky", 1, HALF, 64),
        _run("flaky", 2, None, 64),
        _run("dead", 1, None, 64),
    ]
    rows, _ = _report(runs)
    assert rows["ref"]["bench delta"] == "reference" and rows["ref"]["seeds"] == "3/3"
    same = rows["same"]
    assert same["bench delta"] == "+0.0000" and same["bench delta 95% CI over seeds"] == "[+0.000, +0.000]"
    assert same["bench delta 95% CI over problems"] == "[+0.000, +0.000]"
    assert same["bench verdict (over seeds)"] == "not shown (interval over seeds holds 0)"
    better = rows["better"]
    assert better["bench delta"] == "+0.5000" and better["bench verdict (over seeds)"] == "a > b"
    assert better["bench avg@4"] == 1.0 and better["bench 95% CI over seeds"] == "[1.000, 1.000]"
    # over problems: the three seeds' eval standard errors (0.01 each) combined, 1.96 * sqrt(3) * 0.01 / 3
    assert better["bench 95% CI over problems"] == "[0.989, 1.011]"
    assert rows["more"]["bench delta"] == "not comparable"
    assert rows["more"]["comparable"].startswith("label budget 80 vs 64")
    assert rows["flaky"]["seeds"] == "1/2" and rows["flaky"]["status"] == "failed at seeds [2]"
    # one seed: no interval over seeds; over problems, the eval's own standard error
    assert rows["flaky"]["bench 95% CI over seeds"] == "n/a (one seed)"
    assert rows["flaky"]["bench 95% CI over problems"] == "[0.480, 0.520]"
    assert rows["dead"]["status"] == "failed" and rows["dead"]["bench delta"] == ""
    assert rows["dead"]["bench avg@4"] == "" and len({tuple(r) for r in rows.values()}) == 1  # one header
    assert (rows["ref"]["computed"], rows["ref"]["cached"]) == (3, 3)


def test_seed_means_get_a_t_interval_in_the_row():
    runs = [_run("ref", 1, [0.5] * 4, 0), _run("ref", 2, [0.6] * 4, 0), _run("ref", 3, [0.7] * 4, 0)]
    rows, _ = _report(runs)
    assert rows["ref"]["bench avg@4"] == 0.6 and rows["ref"]["bench 95% CI over seeds"] == "[0.352, 0.848]"


def test_named_comparisons_state_both_budgets_and_each_seeds_sign():
    runs = [
        _run("ref", 1, HALF, 64),
        _run("ref", 2, HALF, 64),
        _run("raw", 1, [0.0] * 20, 0),
        _run("raw", 2, HALF, 0),
        _run("other", 1, HALF, 64, ids="q"),
    ]
    rows, deltas = _report(runs, pairs=[("ref", "raw"), ("ref", "other")])
    assert rows["raw"]["bench delta"] == "not comparable"  # vs the reference: budgets differ
    named = {r["comparison"]: r for r in comparison_rows([d for d in deltas if d.b in {"raw", "other"}])}
    raw = named["ref - raw"]
    assert (raw["delta"], raw["per seed"], raw["signs"]) == ("+0.2500", "+0.5000 / +0.0000", "+0")
    assert raw["labels a vs b"] == "64 vs 0" and raw["equal budgets"] == "no"
    # +0.5 and 0.0 at two seeds: over problems it looks certain, over seeds it is not shown
    assert raw["95% CI over problems"].startswith("[+") and raw["verdict (over seeds)"].startswith(
        "not shown"
    )
    assert raw["95% CI over seeds"] == "[-2.927, +3.427]"  # 0.25 +- 12.706 * 0.3536 / sqrt(2)
    other = named["ref - other"]
    assert other["delta"] == "" and "different problems" in other["verdict (over seeds)"]


def test_the_sweep_chart_draws_seeds_failed_runs_and_deltas(tmp_path):
    runs = [
        _run("ref", 1, HALF, 64),
        _run("ref", 2, [1.0] * 20, 64),
        _run("b", 1, HALF, 64),
        _run("b", 2, None, 64),
    ]
    budgets = {"ref": 64, "b": 64}
    deltas = paired_deltas(runs, [("b", "ref")])
    path = render_sweep_plot(runs, compare_budgets(budgets, "ref"), deltas, tmp_path / "report.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_cli_plans_a_sweep_at_the_seeds_it_is_given(capsys):
    from flows.cli import main

    assert (
        main(["sweep", str(TOY_SWEEP), "--plan", "--seeds", "5,6", "--arm", "full_bridge", "--arm", "no_opd"])
        == 0
    )
    plan = json.loads(capsys.readouterr().out)
    assert list(plan["stages_per_run"]) == [
        "full_bridge@seed5",
        "no_opd@seed5",
        "full_bridge@seed6",
        "no_opd@seed6",
    ]
    assert plan["distinct_stage_keys"] == 2 * 12
    with pytest.raises(SystemExit):
        main(["sweep", str(TOY_SWEEP), "--plan", "--seeds", "5,x"])
    assert "--seeds takes integers" in capsys.readouterr().err


MICRO_ARMS = {
    "full_bridge": Arm(),
    "no_opd": Arm(disable=["opd"]),
    "no_warmup": Arm(disable=["warmup"]),
}


@pytest.fixture(scope="module")
def micro_sweep(prefect_server, tmp_path_factory):
    """The micro sweep on two stages at once, one of its OPD stages SIGKILLed from outside after its
    first checkpoint: returns (sweep, report, the killed stage's directory)."""
    from flows.sweep import ablation_sweep

    work = tmp_path_factory.mktemp("sweep")
    paths = [f"store_dir={work / 'store'}", f"runs_dir={work / 'runs'}"]
    base = load_config(TOY, [*MICRO, *paths, "schedule.max_parallel=2", "opd.checkpoint_every=2"])
    sweep = SweepSpec(
        name="micro-sweep",
        base=base,
        arms=MICRO_ARMS,
        comparisons=[Comparison(a="full_bridge", b="no_opd"), Comparison(a="no_warmup", b="no_opd")],
    )
    killer = KillAtCheckpoint(work / "store", "opd", step=2)
    killer.start()
    try:
        report = ablation_sweep(sweep)
    finally:
        killer.stop.set()
    return sweep, report, killer.killed


def test_sweep_computes_each_distinct_stage_once(micro_sweep):
    sweep, report, _ = micro_sweep
    plan = report["plan"]
    assert plan["distinct_stage_keys"] == 14 and plan["naive_stage_count"] == 11 + 10 + 9
    assert report["computed_stages"] == plan["distinct_stage_keys"]
    assert report["cached_stages"] == plan["naive_stage_count"] - plan["distinct_stage_keys"]
    rows = {r["arm"]: r for r in report["rows"]}
    assert (rows["no_opd"]["computed"], rows["no_warmup"]["computed"]) == (1, 2)
    assert all(r["comparable"] == "yes" for r in rows.values())
    # every arm has a paired delta vs the reference on the micro eval set, with its CI and verdict
    bench = next(k.split()[0] for k in rows["no_opd"] if k.endswith(" delta"))
    assert rows["full_bridge"][f"{bench} delta"] == "reference"
    for arm in ("no_opd", "no_warmup"):
        assert rows[arm][f"{bench} delta"].startswith(("+", "-"))
        assert rows[arm][f"{bench} verdict (over seeds)"] == "one seed: no interval over seeds"
        assert rows[arm][f"{bench} delta 95% CI over problems"].startswith("[")
    named = [(r["comparison"], r["benchmark"]) for r in report["comparisons"]]
    assert named == [("full_bridge - no_opd", bench), ("no_warmup - no_opd", bench)]
    assert all(r["labels a vs b"] == "12 vs 12" and len(r["signs"]) == 1 for r in report["comparisons"])
    problems = len(report["runs"][0]["scores"][bench])
    assert problems == 16 and all(len(r["scores"][bench]) == problems for r in report["runs"])


def test_sweep_report_lands_in_the_dir_mlflow_and_prefect(micro_sweep):
    sweep, report, _ = micro_sweep
    out = Path(report["report_dir"])
    assert {"report.md", "report.csv", "report.png", "sweep.json"} <= {p.name for p in out.iterdir()}
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "sweep.json").read_text())["computed_stages"] == report["computed_stages"]

    uri = f"sqlite:///{Path(sweep.base.runs_dir).resolve()}/mlflow.db"
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("micro-sweep")
    runs = client.search_runs([experiment.experiment_id])
    sweep_run = next(r for r in runs if r.data.tags.get("s2d.sweep") == "micro-sweep")
    artifacts = {a.path for a in client.list_artifacts(sweep_run.info.run_id)}
    assert {"report.md", "report.png", "report.csv", "comparisons.csv", "sweep.json"} <= artifacts
    nested = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == sweep_run.info.run_id]
    assert len(nested) == len(MICRO_ARMS)
    deltas = {d["a"] + "-" + d["b"]: d for d in report["deltas"] if d["result"]}
    bench = report["comparisons"][0]["benchmark"]
    logged = sweep_run.data.metrics[f"delta/full_bridge-no_opd/{bench}"]
    assert logged == pytest.approx(deltas["full_bridge-no_opd"]["result"]["delta"])

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as prefect:
        found = prefect.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["sweep-report"]))
        )
        named = prefect.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["sweep-comparisons"]))
        )
    # other sweeps of the session's server have reports too: this sweep's is the one naming it
    ours = [a for a in found if "`micro-sweep`" in (a.description or "")]
    assert ours and len(json.loads(ours[0].data)) == len(MICRO_ARMS)
    assert any(json.loads(a.data)[0]["comparison"] == "full_bridge - no_opd" for a in named)


def test_sweep_runs_two_stages_at_once_and_resumes_a_killed_one(micro_sweep):
    sweep, report, killed = micro_sweep
    assert killed is not None, "no opd stage reached its first checkpoint to be killed"
    assert not report["errors"]
    entries = [e for r in report["runs"] for e in r["summary"]["stages"].values() if e["path"] == str(killed)]
    # the killed stage was computed once (its task's retry), resumed from the checkpoint, and shared
    assert [e["status"] for e in entries].count("computed") == 1
    assert {e["resumed_from_step"] for e in entries} == {2}
    flow_run_id = report["runs"][0]["summary"]["flow_run_id"]
    assert {r["summary"]["flow_run_id"] for r in report["runs"]} == {flow_run_id}  # one flow run
    task_runs = finished_task_runs(flow_run_id)
    stages = [t for t in task_runs if STAGE_TAG in t.tags]
    assert max(t.run_count for t in stages if t.name.startswith("opd")) == 2  # killed, then retried
    assert most_at_once(stages) == sweep.base.schedule.max_parallel == 2
    # each stage's task run carries the run it belongs to
    assert any(t.name == f"eval/student_final [no_opd@seed{sweep.base.seed}]" for t in stages)


def test_the_cost_table_counts_each_computed_stage_once(micro_sweep):
    """`benchmarks/sweep_costs.py` on the micro sweep's own report: every distinct stage once, its
    task time at least its program's own."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("sweep_costs", ROOT / "benchmarks" / "sweep_costs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    _, report, _ = micro_sweep
    saved = json.loads((Path(report["report_dir"]) / "sweep.json").read_text())
    costs = module.stage_costs(saved)
    assert sum(c["stages"] for c in costs.values()) == report["computed_stages"]
    assert costs["eval"]["stages"] >= 3 and costs["data_prep"]["stages"] == 1
    assert all(c["task_s"] >= c["program_s"] > 0 for c in costs.values())
    assert "| all | 14 |" in module.render(costs, saved["wall_s"])
