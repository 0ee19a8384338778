"""The final student in MLflow's model registry: registered after the micro-world run with its
lineage, loadable with `mlflow.pyfunc.load_model` without a copy of its weights, and evaluated through
its `models:/NAME/VERSION` URI. Reuses the session's micro run (conftest `micro_run`)."""

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from sparse2dense.config import ConfigError, load_config
from sparse2dense.pipeline import plan_keys
from tests.conftest import MICRO, TOY


def _config(workdir: Path, extra: list[str] | None = None):
    paths = [f"store_dir={workdir / 'store'}", f"runs_dir={workdir / 'runs'}"]
    return load_config(TOY, [*MICRO, *paths, *(extra or [])])


def _version(run):
    registered = run["registered_model"]
    client = MlflowClient(run["mlflow"]["tracking_uri"])
    return client.get_model_version(registered["name"], registered["version"])


def test_final_student_is_registered_with_its_lineage(micro_run, micro_workdir):
    keys = plan_keys(_config(micro_workdir))
    registered = micro_run["registered_model"]
    assert registered["name"] == "toy-student" and registered["uri"].startswith("models:/toy-student/")
    assert json.loads(Path(micro_run["summary_path"]).read_text())["registered_model"] == registered
    tags = _version(micro_run).tags
    assert (
        tags["s2d.config"] == "toy"
        and tags["s2d.arm"] == "none"
        and tags["s2d.seed"] == str(_config(micro_workdir).seed)
    )
    assert tags["s2d.stage"] == "opd" and tags["s2d.stage_key"] == keys["opd"]
    assert tags["s2d.teacher_stage"] == "teacher_rl" and tags["s2d.teacher_key"] == keys["teacher_rl"]
    assert tags["prefect.flow_run_id"] == micro_run["flow_run_id"]
    assert tags["s2d.model_dir"] == str(Path(micro_run["stages"]["opd"]["path"]) / "model")
    assert _version(micro_run).run_id == micro_run["stages"]["opd"]["mlflow_run_id"]


def test_registered_model_holds_no_weights_and_loads_from_the_store(micro_run, monkeypatch):
    import mlflow

    artifacts = Path(_version(micro_run).source.removeprefix("file://"))  # the logged model's files
    names = {p.name for p in artifacts.rglob("*") if p.is_file()}
    assert "MLmodel" in names and "student_pyfunc.py" in names
    assert not [n for n in names if n.endswith((".safetensors", ".bin", ".pt"))]
    assert sum(p.stat().st_size for p in artifacts.rglob("*") if p.is_file()) < 100_000

    monkeypatch.setenv("MLFLOW_TRACKING_URI", micro_run["mlflow"]["tracking_uri"])
    model = mlflow.pyfunc.load_model(micro_run["registered_model"]["uri"])
    completions = model.predict(["1 + 2 + 3"])
    assert len(completions) == 1 and isinstance(completions[0], str) and completions[0]


def test_registering_the_same_student_again_reuses_its_version(micro_run, micro_workdir):
    from tasks.registry import register_final_student

    again = register_final_student(_config(micro_workdir), micro_run)
    assert again == micro_run["registered_model"] | {"reused": True}
    arm = register_final_student(_config(micro_workdir, ["name=toy-arm"]), micro_run, arm="arm")
    assert arm["name"] == "toy-arm-student" and not arm["reused"]
    client = MlflowClient(micro_run["mlflow"]["tracking_uri"])
    assert client.get_model_version(arm["name"], arm["version"]).tags["s2d.arm"] == "arm"


def test_a_final_stage_without_its_own_mlflow_run_is_registered_under_the_parent_run(
    micro_run, micro_workdir, tmp_path, monkeypatch
):
    """A stage found in a store filled under another tracking server has no run in this one. MLflow
    must still find the logged model through this run's client, whatever the process-wide URI says."""
    import mlflow.tracking._tracking_service.utils as tracking_utils

    from tasks.registry import register_final_student

    monkeypatch.setattr(tracking_utils, "_tracking_uri", f"sqlite:///{tmp_path / 'elsewhere.db'}")
    cached = json.loads(json.dumps(micro_run))
    cached["stages"]["opd"]["mlflow_run_id"] = None
    registered = register_final_student(_config(micro_workdir, ["name=toy-cached"]), cached)
    version = MlflowClient(micro_run["mlflow"]["tracking_uri"]).get_model_version(
        registered["name"], registered["version"]
    )
    assert version.run_id == micro_run["mlflow"]["parent_run_id"]
    assert version.tags["s2d.stage_key"] == micro_run["stages"]["opd"]["key"]


def test_evaluate_accepts_the_models_uri(micro_run, micro_workdir):
    from flows.evaluate import evaluate

    summary = evaluate(_config(micro_workdir), model_path=micro_run["registered_model"]["uri"])
    assert summary["status"] == "completed" and summary["stages"]["eval/student"]["status"] == "computed"
    assert "toy_test" in summary["eval"]["student"]
    spec = json.loads((Path(summary["stages"]["eval/student"]["path"]) / "spec.json").read_text())
    assert "model" not in spec["upstream"]  # the registered student itself, not a base stage
    assert spec["config"]["models"]["model"]["name_or_path"] == str(
        Path(micro_run["stages"]["opd"]["path"]) / "model"
    )


def test_unknown_models_uri_names_the_registered_models(micro_run, micro_workdir):
    from tasks.registry import resolve_model_source

    with pytest.raises(ConfigError, match=r"models:/toy-student/99: not in the registry.*'toy-student'"):
        resolve_model_source("models:/toy-student/99", _config(micro_workdir))
    with pytest.raises(ConfigError, match="not of the form models:/NAME/VERSION"):
        resolve_model_source("models:/toy-student", _config(micro_workdir))
