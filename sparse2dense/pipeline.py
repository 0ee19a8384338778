"""Which part of the pipeline config each stage receives, and the order of the stages.

A stage never sees the whole config: `stage_payload` cuts out its section (plus the prompt format
and the model specs it loads), in full for the program and semantically for the cache key. The
training stages also get the launcher settings (never part of the key), which say how the task
starts their program (`sparse2dense.launch.stage_command`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel

from sparse2dense.config import LauncherSection, PipelineConfig, semantic_dump
from sparse2dense.launch import TRAINING_STAGES
from sparse2dense.stages import Stage

PROJECT_ROOT = Path(__file__).resolve().parents[1]

ROLES_OF_MODELS = ("teacher", "student")


def _both(value: BaseModel | dict[str, Any]) -> tuple[Any, Any]:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json"), semantic_dump(value)
    return value, value


def launcher_payload(launcher: LauncherSection) -> dict[str, Any]:
    """The launcher settings as SPEC.json carries them, with `config_file` made absolute: as given
    when it exists from the working directory, else relative to the project (infra/accelerate/...)."""
    out = launcher.model_dump(mode="json")
    if launcher.config_file is not None:
        path = Path(launcher.config_file).expanduser()
        if not path.is_absolute():
            path = path.resolve() if path.exists() else PROJECT_ROOT / path
        out["config_file"] = str(path)
    return out


def stage_payload(cfg: PipelineConfig, stage: Stage, model: str | None = None) -> tuple[dict, dict]:
    """(config for SPEC.json, semantic subset for the key). `model` is "teacher" or "student"
    for the stages that act on either (base, eval)."""
    config, semantic = _stage_payload(cfg, stage, model)
    if stage in TRAINING_STAGES:
        config["launcher"] = launcher_payload(cfg.launcher)
    return config, semantic


def _stage_payload(cfg: PipelineConfig, stage: Stage, model: str | None = None) -> tuple[dict, dict]:
    prompt = {
        "template": cfg.data.prompt_template,
        "chat_template_kwargs": dict(cfg.data.chat_template_kwargs),
    }
    parts: dict[str, Any] = {}
    if stage is Stage.DATA_PREP:
        parts["data"] = cfg.data
    elif stage is Stage.BASE:
        steps = cfg.base.teacher_steps if model == "teacher" else cfg.base.student_steps
        train = {
            "steps": steps,
            "learning_rate": cfg.base.learning_rate,
            "batch_size": cfg.base.batch_size,
        }
        if model == "student" and cfg.base.student_max_terms is not None:
            train["max_terms"] = cfg.base.student_max_terms
        parts |= {"train": train, "prompt": prompt, "models": {"policy": getattr(cfg, model)}}
        config, semantic = _collect(parts)
        config["train"]["logging_steps"] = cfg.base.logging_steps
        config["train"]["memory"] = cfg.base.memory.model_dump(mode="json")
        return config, semantic
    elif stage is Stage.TEACHER_RL:
        parts |= {"grpo": cfg.teacher_rl, "prompt": prompt, "models": {"policy": cfg.teacher}}
    elif stage is Stage.STUDENT_RL:
        parts |= {"grpo": cfg.student_rl, "prompt": prompt, "models": {"policy": cfg.student}}
    elif stage is Stage.TEACHER_ROLLOUTS:
        parts |= {"rollouts": cfg.teacher_rollouts, "prompt": prompt, "models": {"teacher": cfg.teacher}}
    elif stage is Stage.WARMUP:
        parts |= {"warmup": cfg.warmup, "models": {"student": cfg.student, "teacher": cfg.teacher}}
    elif stage is Stage.OPD:
        parts |= {
            "opd": cfg.opd,
            "prompt": prompt,
            "models": {"student": cfg.student, "teacher": cfg.teacher},
        }
    elif stage is Stage.EVAL:
        parts |= {"eval": cfg.eval, "prompt": prompt, "models": {"model": getattr(cfg, model)}}
    return _collect(parts)


def _collect(parts: dict[str, Any]) -> tuple[dict, dict]:
    config, semantic = {}, {}
    for name, value in parts.items():
        if name == "models":
            pairs = {role: _both(spec) for role, spec in value.items()}
            config[name] = {role: p[0] for role, p in pairs.items()}
            semantic[name] = {role: p[1] for role, p in pairs.items()}
        else:
            config[name], semantic[name] = _both(value)
    return config, semantic


class PlannedStage(BaseModel):
    name: str
    stage: Stage
    model: str | None = None
    upstream: dict[str, str] = {}  # role -> name of the planned stage that provides it


def _stage(name: str, stage: Stage, acts_on: str | None = None, **upstream: str | None) -> PlannedStage:
    return PlannedStage(
        name=name, stage=stage, model=acts_on, upstream={r: n for r, n in upstream.items() if n is not None}
    )


def plan_stages(cfg: PipelineConfig) -> list[PlannedStage]:
    """The pipeline's table of contents: stages in order, plain `if` for the optional ones."""
    plan = [_stage("data_prep", Stage.DATA_PREP)]
    teacher = student = None  # None: the configured hub/local model itself
    if cfg.teacher.toy is not None:
        plan.append(_stage("base/teacher", Stage.BASE, "teacher", data="data_prep"))
        teacher = "base/teacher"
    if cfg.student.toy is not None:
        plan.append(_stage("base/student", Stage.BASE, "student", data="data_prep"))
        student = "base/student"
    plan.append(_stage("eval/teacher_base", Stage.EVAL, "teacher", data="data_prep", model=teacher))
    plan.append(_stage("eval/student_base", Stage.EVAL, "student", data="data_prep", model=student))
    if cfg.teacher_rl.enabled:
        plan.append(_stage("teacher_rl", Stage.TEACHER_RL, "teacher", data="data_prep", policy=teacher))
        teacher = "teacher_rl"
        plan.append(_stage("eval/teacher_rl", Stage.EVAL, "teacher", data="data_prep", model=teacher))
    if cfg.warmup.enabled:
        plan.append(_stage("teacher_rollouts", Stage.TEACHER_ROLLOUTS, data="data_prep", teacher=teacher))
        plan.append(
            _stage("warmup", Stage.WARMUP, student=student, teacher=teacher, rollouts="teacher_rollouts")
        )
        student = "warmup"
    if cfg.opd.enabled:
        plan.append(_stage("opd", Stage.OPD, data="data_prep", student=student, teacher=teacher))
        student = "opd"
    if cfg.student_rl.enabled:
        plan.append(_stage("student_rl", Stage.STUDENT_RL, "student", data="data_prep", policy=student))
        student = "student_rl"
    plan.append(_stage("eval/student_final", Stage.EVAL, "student", data="data_prep", model=student))
    return plan


def plan_evaluation(cfg: PipelineConfig, role: str) -> list[PlannedStage]:
    """Evaluate one configured model (a toy one after its pre-training) on the eval sets."""
    plan = [_stage("data_prep", Stage.DATA_PREP)]
    model = None
    if getattr(cfg, role).toy is not None:
        plan.append(_stage(f"base/{role}", Stage.BASE, role, data="data_prep"))
        model = f"base/{role}"
    plan.append(_stage(f"eval/{role}", Stage.EVAL, role, data="data_prep", model=model))
    return plan


def plan_keys(cfg: PipelineConfig, plan: list[PlannedStage] | None = None) -> dict[str, str]:
    """Every planned stage's cache key, computed before anything runs."""
    from sparse2dense.spec import compute_stage_key

    keys: dict[str, str] = {}
    for planned in plan if plan is not None else plan_stages(cfg):
        _, semantic = stage_payload(cfg, planned.stage, planned.model)
        upstream = {role: keys[name] for role, name in planned.upstream.items()}
        keys[planned.name] = compute_stage_key(planned.stage, semantic, upstream, cfg.seed)
    return keys
