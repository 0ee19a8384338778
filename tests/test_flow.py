"""The post-train flow on a tiny toy world: every stage real, cached, tracked.

One module-scoped first run feeds several checks: objectives move the right way, a rerun is fully
cached without launching a stage, a changed `opd` field recomputes only `opd` and its dependants,
and a deleted file in a cached stage makes that stage recompute instead of crashing.
"""

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from sparse2dense.config import load_config
from tests.conftest import MICRO, TOY


@pytest.fixture(scope="module")
def workdir(micro_workdir):
    return micro_workdir


def _config(workdir: Path, extra: list[str] | None = None):
    paths = [f"store_dir={workdir / 'store'}", f"runs_dir={workdir / 'runs'}"]
    return load_config(TOY, [*MICRO, *paths, *(extra or [])])


def _run(workdir, extra=None):
    from flows.post_train import post_train

    return post_train(_config(workdir, extra))


def _log_sizes(workdir: Path) -> dict[str, int]:
    return {str(p): p.stat().st_size for p in (workdir / "store" / "_logs").rglob("*.log")}


@pytest.fixture(scope="module")
def first(micro_run):
    return micro_run


def test_first_run_computes_every_stage_and_writes_summary(first):
    assert {e["status"] for e in first["stages"].values()} == {"computed"}
    on_disk = json.loads(Path(first["summary_path"]).read_text())
    assert set(on_disk["stages"]) == set(first["stages"])
    assert set(on_disk["eval"]) == {"teacher_base", "student_base", "teacher_rl", "student_final"}
    assert on_disk["labels"]["teacher_rl"] > 0
    assert 0.0 <= on_disk["stages"]["teacher_rl"]["metrics"]["truncation_ratio"] <= 1.0  # a fraction
    # every GRPO group of 3 steps x 4 prompts is recorded once, with its problem's difficulty
    grpo = on_disk["stages"]["teacher_rl"]["metrics"]
    assert grpo["groups"] == 3 * 4 and 0.0 <= grpo["zero_std"] <= 1.0
    assert grpo["zero_std"] == pytest.approx(grpo["all_right"] + grpo["all_wrong"])
    per_level = [k for k in grpo if k.startswith("groups_difficulty_")]
    assert per_level and sum(grpo[k] for k in per_level) == grpo["groups"]


def test_objectives_move_the_right_way(first):
    """Each objective falls by several standard errors, re-measured sequence by sequence from the
    saved models: a fall that another CPU's rounding could undo is no evidence of learning."""
    from tests.effects import MARGIN, opd_fall, pretraining_fall, warmup_fall

    falls = {name: pretraining_fall(first, name) for name in ("base/teacher", "base/student")}
    falls["warmup"], kl = warmup_fall(first)
    warmup = first["stages"]["warmup"]["metrics"]  # the stage measured the same sequences
    assert kl == pytest.approx({"before": warmup["forward_kl_before"], "after": warmup["forward_kl_after"]})
    falls["opd"] = opd_fall(first)
    assert all(f.margin >= MARGIN for f in falls.values()), {k: str(v) for k, v in falls.items()}


def test_mlflow_has_parent_and_one_child_per_computed_stage(first):
    client = MlflowClient(first["mlflow"]["tracking_uri"])
    parent = client.get_run(first["mlflow"]["parent_run_id"])
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert sorted(r.info.run_name for r in children) == sorted(first["stages"])
    opd_run = next(r for r in children if r.info.run_name == "opd")
    assert len(client.get_metric_history(opd_run.info.run_id, "loss")) >= 2  # a training curve
    assert "stage/reverse_kl_after" in opd_run.data.metrics


def test_prefect_shows_one_task_run_per_stage_and_the_eval_table(first):
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterKey,
        FlowRunFilter,
        FlowRunFilterId,
    )

    async def fetch():
        async with get_client() as client:
            flow_run_id = first["flow_run_id"]
            tasks = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
            artifacts = await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["eval-results"])),
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
            )
            return tasks, artifacts

    tasks, artifacts = asyncio.run(fetch())
    assert sorted(t.name for t in tasks) == sorted(first["stages"])
    assert len(artifacts) == 1 and "student_final" in str(artifacts[0].data)


def test_rerun_is_fully_cached_without_launching_stages(first, workdir):
    sizes = _log_sizes(workdir)
    second = _run(workdir)
    assert {e["status"] for e in second["stages"].values()} == {"cached"}
    assert _log_sizes(workdir) == sizes  # no stage program ran
    assert second["eval"] == first["eval"]


def test_changing_opd_recomputes_only_opd_and_dependants(first, workdir):
    changed = _run(workdir, ["opd.steps=5"])
    computed = {n for n, e in changed["stages"].items() if e["status"] == "computed"}
    assert computed == {"opd", "eval/student_final"}


def test_deleted_file_in_cached_stage_is_recomputed(first, workdir):
    warmup_dir = Path(first["stages"]["warmup"]["path"])
    (warmup_dir / "model" / "model.safetensors").unlink()
    again = _run(workdir)
    assert again["stages"]["warmup"]["status"] == "computed"
    assert (warmup_dir / "model" / "model.safetensors").is_file()
    assert again["stages"]["teacher_rl"]["status"] == "cached"


def test_forced_stage_is_computed_again_not_reused(first, workdir):
    from flows.post_train import post_train

    name = "eval/teacher_base"
    entry = first["stages"][name]
    manifest = Path(entry["path"]) / "manifest.json"
    log = workdir / "store" / "_logs" / "eval" / f"{entry['key']}.log"
    written, logged = manifest.stat().st_mtime_ns, log.stat().st_size
    forced = post_train(_config(workdir), force_rerun=[name])
    assert forced["stages"][name]["status"] == "computed"
    assert forced["stages"]["teacher_rl"]["status"] == "cached"
    assert manifest.stat().st_mtime_ns > written  # the program wrote a new result
    assert "already complete" not in log.read_text()[logged:]


def test_eval_metrics_agree_with_per_sample_records(first):
    path = Path(first["stages"]["eval/teacher_base"]["path"])
    rows = [json.loads(line) for line in (path / "records" / "toy_test.jsonl").read_text().splitlines()]
    verdicts = [s["verdict"] == "correct" for r in rows for s in r["samples"]]
    results = json.loads((path / "results.json").read_text())
    assert results["benchmarks"]["toy_test"]["avg@2"] == pytest.approx(sum(verdicts) / len(verdicts))
    assert results["generation"]["backend"] == "transformers" and results["sampling"]["n"] == 2


def test_rollouts_hold_out_whole_prompts_and_end_in_eos(first):
    path = Path(first["stages"]["teacher_rollouts"]["path"]) / "rollouts"
    train = [json.loads(x) for x in (path / "train.jsonl").read_text().splitlines()]
    heldout = [json.loads(x) for x in (path / "heldout.jsonl").read_text().splitlines()]
    assert heldout and not {r["id"] for r in train} & {r["id"] for r in heldout}
    from sparse2dense.toy import build_tokenizer

    eos = build_tokenizer().eos_token_id
    assert all(r["completion_ids"][-1] == eos for r in train if r["finish_reason"] == "stop")


# Slow (a second pipeline run); the SFT objective's training and measurement run in the default
# suite in tests/test_warmup.py, selective recomputation in test_changing_opd_recomputes_only_opd_and_dependants.
@pytest.mark.slow
def test_sft_warmup_option_recomputes_from_warmup_and_lowers_kl(first, workdir):
    sft = _run(workdir, ["warmup.objective=sft"])
    computed = {n for n, e in sft["stages"].items() if e["status"] == "computed"}
    assert computed == {"warmup", "opd", "eval/student_final"}
    from tests.effects import MARGIN, warmup_fall

    fall, kl = warmup_fall(sft)  # the stage's own sequences, re-measured one by one
    metrics = sft["stages"]["warmup"]["metrics"]
    assert kl == pytest.approx({"before": metrics["forward_kl_before"], "after": metrics["forward_kl_after"]})
    assert fall.margin >= MARGIN, str(fall)
