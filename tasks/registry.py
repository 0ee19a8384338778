"""The model registry: a run's final student as an MLflow model version, its weights left in the store.

A version is an MLflow logged model of the pyfunc flavor logged from code (`student_pyfunc.py`):
the logged files are that code, the environment and a `model_config` naming the student's `model/`
directory in the store. No checkpoint is copied; `mlflow.pyfunc.load_model("models:/NAME/V")` loads
the weights from the store, and `s2d evaluate --model-path models:/NAME/V` evaluates them. Each
version carries its lineage as tags (config, arm, seed, stage and teacher keys, flow run); a run
whose final student is already registered under the name (same stage key) reuses that version.
"""

from __future__ import annotations

import json
import re
import tempfile
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import LoggedModelStatus
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import Model
from mlflow.tracking import MlflowClient

from sparse2dense.config import ConfigError, PipelineConfig
from sparse2dense.graph import current
from sparse2dense.models import MODEL_DIR
from sparse2dense.pipeline import plan_stages
from sparse2dense.preflight import model_source_problem
from sparse2dense.schema import check_name
from sparse2dense.services import embedded_tracking_uri
from sparse2dense.store import verify_stage_dir
from tasks import tracking

PYFUNC_CODE = Path(__file__).with_name("student_pyfunc.py")
MODEL_DIR_TAG = "s2d.model_dir"
MODEL_URI = re.compile(r"models:/([^/@]+)(?:/([\w-]+)|@([\w-]+))")


def registered_name(config_name: str) -> str:
    """The registry name of a config's final student: NAME-student. A config's name is a `Name`,
    whose characters MLflow takes as they are, so no two configs share a registered model."""
    return f"{check_name(config_name)}-student"


def tracking_uri_of(cfg: PipelineConfig) -> str:
    return cfg.tracking.tracking_uri or embedded_tracking_uri(Path(cfg.runs_dir).resolve())


def final_student(cfg: PipelineConfig) -> tuple[str | None, str | None]:
    """(the planned stage whose model is the final student, the stage of the teacher that taught
    it); None where it is the configured model itself, or where no teacher stage taught it."""
    plan = plan_stages(cfg)
    final = next(p for p in plan if p.name == current().final_eval).upstream.get("model")
    teacher = next((p.upstream["teacher"] for p in reversed(plan) if "teacher" in p.upstream), None)
    return final, teacher


def lineage_tags(cfg: PipelineConfig, summary: dict[str, Any], arm: str | None) -> dict[str, str]:
    final, teacher = final_student(cfg)
    assert final is not None
    stages = summary["stages"]
    bridged = cfg.warmup.enabled or cfg.opd.enabled
    return {
        "s2d.config": cfg.name,
        "s2d.arm": arm or "none",
        "s2d.seed": str(cfg.seed),
        "s2d.stage": final,
        "s2d.stage_key": stages[final]["key"],
        "s2d.teacher_stage": teacher or (f"configured {cfg.teacher.name_or_path}" if bridged else "none"),
        "s2d.teacher_key": stages[teacher]["key"] if teacher else "none",
        "s2d.labels_total": str(summary["labels"]["total"]),
        "prefect.flow_run_id": summary["flow_run_id"],
        "s2d.mlflow_parent_run_id": summary["mlflow"]["parent_run_id"],
        MODEL_DIR_TAG: str(Path(stages[final]["path"]) / MODEL_DIR),
    }


def _requirements() -> list[str]:
    return [f"{name}=={package_version(name)}" for name in ("mlflow", "torch", "transformers")]


def _log_pyfunc(client: MlflowClient, experiment_id: str, run_id: str | None, cfg, tags) -> str:
    """A logged model holding only the pyfunc code and the store path; its model id."""
    logged = client.create_logged_model(
        experiment_id, name="student", source_run_id=run_id, tags=tags, model_type="causal-lm"
    )
    model_config = {
        "model_dir": tags[MODEL_DIR_TAG],
        "prompt_template": cfg.data.prompt_template,
        "chat_template_kwargs": dict(cfg.data.chat_template_kwargs),
        "max_new_tokens": cfg.eval.max_new_tokens,
    }
    try:
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / "model"
            mlflow.pyfunc.save_model(
                path=str(local),
                python_model=str(PYFUNC_CODE),
                model_config=model_config,
                pip_requirements=_requirements(),
                mlflow_model=Model(
                    artifact_path=logged.artifact_location,
                    model_uuid=logged.model_id,
                    run_id=run_id,
                    model_id=logged.model_id,
                ),
            )
            client.log_model_artifacts(logged.model_id, str(local))
    except BaseException:
        client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
        raise
    client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    return logged.model_id


def _existing_version(client: MlflowClient, name: str, tags: dict[str, str]) -> ModelVersion | None:
    for version in client.search_model_versions(f"name = '{name}'"):
        if all(version.tags.get(k) == tags[k] for k in ("s2d.stage_key", MODEL_DIR_TAG)):
            return version
    return None


def register_final_student(
    cfg: PipelineConfig, summary: dict[str, Any], arm: str | None = None
) -> dict[str, Any] | None:
    """Register the completed run's final student; None when the student is the configured model
    itself (nothing was trained). Returns name, version, `models:/` URI and whether it was reused."""
    final, _ = final_student(cfg)
    if final is None or summary.get("status") != "completed":
        return None
    uri = summary["mlflow"]["tracking_uri"]
    client = tracking.connect(uri)
    name, tags = registered_name(cfg.name), lineage_tags(cfg, summary, arm)
    experiment_id = client.get_run(summary["mlflow"]["parent_run_id"]).info.experiment_id
    with tracking.store_lock(uri):
        version = _existing_version(client, name, tags)
        reused = version is not None
        if version is None:
            # A stage taken from the store may have no run of its own in this tracking server; the
            # version then points at this run's parent. A version without a run id would make MLflow
            # look its logged model up through the process-wide tracking URI, not this client's.
            run_id = summary["stages"][final]["mlflow_run_id"] or summary["mlflow"]["parent_run_id"]
            model_id = _log_pyfunc(client, experiment_id, run_id, cfg, tags)
            try:
                client.create_registered_model(name, description=f"Final student of config {cfg.name}")
            except MlflowException as err:
                if err.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
            # The logged model's own location as the source: a `models:/<id>` source would be looked
            # up through MLflow's process-wide tracking URI rather than this client's.
            source = client.get_logged_model(model_id).artifact_location
            version = client.create_model_version(name, source, run_id=run_id, tags=tags, model_id=model_id)
    return {
        "name": name,
        "version": version.version,
        "uri": f"models:/{name}/{version.version}",
        "reused": reused,
    }


def record_registration(summary: dict[str, Any], registration: dict[str, Any] | None) -> None:
    """Add the registration to the summary, in memory and in `summary.json`."""
    summary["registered_model"] = registration
    path = Path(summary["summary_path"])
    on_disk = json.loads(path.read_text())
    on_disk["registered_model"] = registration
    path.write_text(json.dumps(on_disk, indent=2))


def resolve_model_uri(uri: str, tracking_uri: str) -> str:
    """The store directory of a registered student (`models:/NAME/VERSION`, `/latest`, `@ALIAS`)."""
    match = MODEL_URI.fullmatch(uri)
    if match is None:
        raise ConfigError(f"model URI {uri!r} is not of the form models:/NAME/VERSION or models:/NAME@ALIAS")
    if tracking_uri.startswith("sqlite:///") and not Path(tracking_uri.removeprefix("sqlite:///")).is_file():
        raise ConfigError(f"{uri}: no MLflow store at {tracking_uri}")
    name, number, alias = match.groups()
    client = MlflowClient(tracking_uri)
    try:
        if alias:
            version = client.get_model_version_by_alias(name, alias)
        elif number == "latest":
            versions = client.search_model_versions(f"name = '{name}'")
            if not versions:
                raise MlflowException(f"registered model {name!r} has no versions")
            version = max(versions, key=lambda v: int(v.version))
        else:
            version = client.get_model_version(name, number)
    except MlflowException as err:
        known = sorted(m.name for m in client.search_registered_models())
        raise ConfigError(
            f"{uri}: not in the registry at {tracking_uri} ({err.message}); registered models: {known}"
        ) from None
    model_dir = version.tags.get(MODEL_DIR_TAG)
    if not model_dir:
        raise ConfigError(
            f"{uri} was not registered by this pipeline (its version has no {MODEL_DIR_TAG} tag)"
        )
    if problem := verify_stage_dir(Path(model_dir).parent, deep=False):
        raise ConfigError(
            f"{uri} points at {model_dir}, which is no longer a complete stage result: {problem}"
        )
    return model_dir


def resolve_model_source(model_path: str, cfg: PipelineConfig) -> str:
    """A local directory or hub id to evaluate: a `models:/` URI resolved through the config's
    registry, anything else checked to exist (see `model_source_problem`)."""
    if model_path.startswith("models:/"):
        model_path = resolve_model_uri(model_path, tracking_uri_of(cfg))
    if problem := model_source_problem(model_path):
        raise ConfigError(problem)
    return model_path
