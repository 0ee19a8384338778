"""Ablation sweeps: the shipped sweep files, the plan's shared stages, the label-budget rule, and a
micro sweep whose arms share every common stage through the cache and report in all three places."""

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from sparse2dense.config import ConfigError, load_config
from sparse2dense.ledger import Ledger, compare_budgets
from sparse2dense.sweep import Arm, SweepSpec, arm_configs, load_sweep, sweep_plan
from tasks.reporting import sweep_rows
from tests.conftest import MICRO, ROOT, TOY

SWEEPS = sorted((ROOT / "configs" / "sweeps").glob("*.yaml"))
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


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.name)
def test_shipped_sweeps_validate_and_hold_the_papers_arms(path):
    sweep = load_sweep(path)
    assert set(sweep.arms) >= PAPER_ARMS
    configs = arm_configs(sweep)
    assert not configs["raw_teacher"].teacher_rl.enabled
    assert configs["sft_warmup"].warmup.objective == "sft"
    assert configs["stage4_replay"].student_rl.labels == "replay"
    direct = configs["direct_grpo"]
    assert direct.student_rl.enabled and direct.student_rl.labels == "stage1"
    assert not (direct.teacher_rl.enabled or direct.warmup.enabled or direct.opd.enabled)


def test_toy_sweep_plan_shares_the_teacher_across_arms():
    plan = sweep_plan(arm_configs(load_sweep(ROOT / "configs/sweeps/toy-ablations.yaml")))
    # data_prep, both base models, their evals, teacher RL and its eval are common to most arms.
    assert plan.naive_stage_count == sum(plan.stages_per_arm.values()) == 81
    assert plan.distinct_stage_keys == 27
    assert max(len(arms) for arms in plan.shared.values()) == 8


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


def _summary(avg: float, labels: int) -> dict:
    m = {"avg@4": avg, "avg@4_stderr": 0.01, "avg@4_ci95_low": avg - 0.02, "avg@4_ci95_high": avg + 0.02}
    return {
        "eval": {"student_final": {"bench": m}},
        "labels": {"total": labels},
        "stages": {"a": {"status": "computed"}, "b": {"status": "cached"}},
    }


def test_report_rows_refuse_deltas_between_different_budgets():
    summaries = {"ref": _summary(0.5, 64), "same": _summary(0.6, 64), "more": _summary(0.7, 80), "dead": None}
    verdicts = compare_budgets({k: v["labels"]["total"] for k, v in summaries.items() if v}, "ref")
    rows = {r["arm"]: r for r in sweep_rows(summaries, "ref", verdicts)}
    assert rows["same"]["bench delta"] == "+0.1000"
    assert rows["more"]["bench delta"] == "not comparable"
    assert rows["more"]["comparable"].startswith("label budget 80 vs 64")
    assert rows["dead"]["status"] == "failed"
    assert (rows["ref"]["computed"], rows["ref"]["cached"]) == (1, 1)


MICRO_ARMS = {
    "full_bridge": Arm(),
    "no_opd": Arm(disable=["opd"]),
    "no_warmup": Arm(disable=["warmup"]),
}


@pytest.fixture(scope="module")
def micro_sweep(prefect_server, tmp_path_factory):
    from flows.sweep import ablation_sweep

    work = tmp_path_factory.mktemp("sweep")
    base = load_config(TOY, [*MICRO, f"store_dir={work / 'store'}", f"runs_dir={work / 'runs'}"])
    sweep = SweepSpec(name="micro-sweep", base=base, arms=MICRO_ARMS)
    return sweep, ablation_sweep(sweep)


def test_sweep_computes_each_distinct_stage_once(micro_sweep):
    sweep, report = micro_sweep
    plan = report["plan"]
    assert plan["distinct_stage_keys"] == 14 and plan["naive_stage_count"] == 11 + 10 + 9
    assert report["computed_stages"] == plan["distinct_stage_keys"]
    assert report["cached_stages"] == plan["naive_stage_count"] - plan["distinct_stage_keys"]
    rows = {r["arm"]: r for r in report["rows"]}
    assert (rows["no_opd"]["computed"], rows["no_warmup"]["computed"]) == (1, 2)
    assert all(r["comparable"] == "yes" for r in rows.values())


def test_sweep_report_lands_in_the_dir_mlflow_and_prefect(micro_sweep):
    sweep, report = micro_sweep
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
    assert {"report.md", "report.png", "report.csv", "sweep.json"} <= artifacts
    arm_runs = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == sweep_run.info.run_id]
    assert len(arm_runs) == len(MICRO_ARMS)

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as prefect:
        found = prefect.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["sweep-report"]))
        )
    assert found and len(json.loads(found[0].data)) == len(MICRO_ARMS)
