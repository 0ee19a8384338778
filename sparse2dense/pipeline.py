"""The plan of a pipeline run, read off the stage graph: which steps run under a config, what each
one receives, and every step's cache key before anything runs.

A stage never sees the whole config: `stage_inputs` builds its typed inputs (`graph.StageDef.inputs`)
from its section, the prompt format and the models it loads; the cache key takes their semantic
part (`schema.semantic_dump`: the launcher and other placement settings are left out).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from sparse2dense.gguf import file_digest, gguf_problem, is_gguf
from sparse2dense.graph import PromptFormat, Stage, StageInputs, StageKind, current
from sparse2dense.placement import LauncherSection
from sparse2dense.schema import semantic_dump
from sparse2dense.sections import ModelSpec

if TYPE_CHECKING:  # the config validates itself against the plan: it imports this module
    from sparse2dense.config import PipelineConfig

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def launcher_for_spec(launcher: LauncherSection) -> LauncherSection:
    """The launcher as SPEC.json carries it, with `config_file` made absolute: as given when it
    exists from the working directory, else relative to the project (infra/accelerate/...)."""
    if launcher.config_file is None:
        return launcher
    path = Path(launcher.config_file).expanduser()
    if not path.is_absolute():
        path = path.resolve() if path.exists() else PROJECT_ROOT / path
    return launcher.model_copy(update={"config_file": str(path)})


def pinned(spec: ModelSpec) -> ModelSpec:
    """A model named by a `.gguf` file, with the file's digest: keys follow the file's content, and a
    stage refuses a file that changed after the plan. A file that is not there is left for the
    pre-flight to name."""
    if spec.sha256 is not None or not is_gguf(spec.name_or_path):
        return spec
    path = Path(spec.name_or_path).expanduser()
    if gguf_problem(path):
        return spec
    return spec.model_copy(update={"sha256": file_digest(path)})


def stage_inputs(cfg: PipelineConfig, stage: str, model: str | None = None) -> StageInputs:
    """The typed inputs of one stage under `cfg`; `model` is the role ("teacher"/"student") the step
    acts on, for stages that act on either (base, eval, the GRPO stages)."""
    d = current().stage(stage)
    section = getattr(cfg, d.section)
    if hasattr(section, "for_role"):
        section = section.for_role(model)
    values: dict[str, Any] = {d.field: section}
    if "prompt" in d.inputs.model_fields:
        values["prompt"] = PromptFormat(
            template=cfg.data.prompt_template,
            chat_template_kwargs=dict(cfg.data.chat_template_kwargs),
            answer_format=cfg.data.answer_format,
        )
    values["models"] = {
        role: pinned(getattr(cfg, model if src == "self" else src)) for role, src in d.models.items()
    }
    if d.kind is StageKind.TRAINING:
        values["launcher"] = launcher_for_spec(cfg.launcher)
    return d.inputs(**values)


def stage_payload(cfg: PipelineConfig, stage: str, model: str | None = None) -> tuple[dict, dict]:
    """(inputs as SPEC.json carries them, their semantic subset for the key)."""
    inputs = stage_inputs(cfg, stage, model)
    unset = {"launcher"} if inputs.launcher is None else None
    return inputs.model_dump(mode="json", exclude=unset), semantic_dump(inputs)


class PlannedStage(BaseModel):
    name: str
    stage: str
    model: str | None = None
    upstream: dict[str, str] = {}  # role -> name of the planned stage that provides it


def _switched_on(cfg: PipelineConfig, dotted: str | None) -> bool:
    """A step's switch: the config value at `dotted` (a section's `enabled`, a model's `toy`)."""
    if dotted is None:
        return True
    value: Any = cfg
    for part in dotted.split("."):
        value = getattr(value, part)
    return bool(value)


def plan_stages(cfg: PipelineConfig) -> list[PlannedStage]:
    """The pipeline's table of contents under `cfg`: the graph's steps that are switched on, in
    order, each reading the newest step that became the model it names (none: the configured one)."""
    plan: list[PlannedStage] = []
    newest: dict[str, str] = {}  # role -> the planned step that last became that model
    for step in current().pipeline:
        if not _switched_on(cfg, step.when):
            continue
        upstream = {}
        for role, source in step.inputs.items():
            if not source.startswith("@"):
                upstream[role] = source
            elif source[1:] in newest:
                upstream[role] = newest[source[1:]]
        plan.append(PlannedStage(name=step.name, stage=step.stage, model=step.acts_on, upstream=upstream))
        if step.becomes:
            newest[step.becomes] = step.name
    return plan


def plan_evaluation(cfg: PipelineConfig, role: str) -> list[PlannedStage]:
    """Evaluate one configured model (a toy one after its pre-training) on the eval sets: the
    pipeline's first evaluation of that model and what it reads, the evaluation named `eval/<role>`."""
    plan = plan_stages(cfg)
    by_name = {p.name: p for p in plan}
    target = next(p for p in plan if p.stage == Stage.EVAL and p.model == role)
    needed, frontier = {target.name}, [target]
    while frontier:
        for name in frontier.pop().upstream.values():
            if name not in needed:
                needed.add(name)
                frontier.append(by_name[name])
    return [
        p.model_copy(update={"name": f"eval/{role}"}) if p is target else p for p in plan if p.name in needed
    ]


def unknown_forced(names: Iterable[str], plans: Iterable[list[PlannedStage]]) -> str | None:
    """Why some names to recompute match nothing in the plans (a run's `force_rerun` matches a planned
    stage's name, `eval/student_final`, or its kind, `eval`), or None. A typo would otherwise leave
    the stage cached while the user believes it ran."""
    stages: dict[str, None] = {}
    kinds: set[str] = set()
    for plan in plans:
        for planned in plan:
            stages[planned.name] = None
            kinds.add(str(planned.stage))
    known = [*stages, *sorted(kinds - set(stages))]
    unknown = [name for name in dict.fromkeys(names) if name not in known]
    if not unknown:
        return None
    described = []
    for name in unknown:
        close = difflib.get_close_matches(name, known, n=1)
        described.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return (
        f"no planned stage or stage kind {', '.join(described)}; the planned stages are "
        f"{', '.join(stages)}; stage kinds {', '.join(sorted(kinds))}"
    )


def plan_keys(cfg: PipelineConfig, plan: list[PlannedStage] | None = None) -> dict[str, str]:
    """Every planned stage's cache key, computed before anything runs."""
    from sparse2dense.spec import compute_stage_key

    keys: dict[str, str] = {}
    for planned in plan if plan is not None else plan_stages(cfg):
        _, semantic = stage_payload(cfg, planned.stage, planned.model)
        upstream = {role: keys[name] for role, name in planned.upstream.items()}
        keys[planned.name] = compute_stage_key(planned.stage, semantic, upstream, cfg.seed)
    return keys
