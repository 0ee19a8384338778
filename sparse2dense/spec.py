"""What a stage program receives (`StageSpec`, written as SPEC.json) and how its cache key is made.

`key = sha256(stage, its version in the graph, semantic config, upstream keys, seed)`: anything that changes
the output changes the key; logging cadence and names do not. Keys chain through upstream *keys*, so
the whole plan's keys are known before anything runs; each manifest also records its upstream
*digests*, and a cached result whose upstream was since recomputed differently is not trusted.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from sparse2dense.graph import StageInputs, current, stage_version
from sparse2dense.store import StageResult, read_manifest, verify_stage_dir

InputsT = TypeVar("InputsT", bound=StageInputs)


class StageSpec(BaseModel):
    """SPEC.json. `config` is the stage's inputs as JSON; `inputs` is the same, typed and validated
    by the stage's inputs model when the spec is made (a bad spec never reaches a program)."""

    model_config = ConfigDict(frozen=True)

    stage: str
    name: str
    key: str
    config: dict[str, Any]
    semantic_config: dict[str, Any]
    upstream: dict[str, StageResult] = {}
    output_dir: str
    seed: int

    @field_validator("stage")
    @classmethod
    def _known_stage(cls, stage: str) -> str:
        current().stage(stage)
        return stage

    @model_validator(mode="after")
    def _inputs_are_valid(self) -> StageSpec:
        self.inputs  # noqa: B018  (validates; raises naming the field)
        return self

    @property
    def inputs(self) -> StageInputs:
        """The config, validated by the stage's inputs model (again after a `model_copy`)."""
        return current().stage(self.stage).inputs.model_validate(self.config)

    def inputs_of(self, kind: type[InputsT]) -> InputsT:
        """The inputs, typed as the program expects them (refused if the spec is another stage's)."""
        inputs = self.inputs
        if not isinstance(inputs, kind):
            raise TypeError(
                f"stage {self.name} ({self.stage}) has {type(inputs).__name__}, not {kind.__name__}"
            )
        return inputs

    def upstream_path(self, role: str) -> Path:
        if role not in self.upstream:
            raise KeyError(f"stage {self.name} needs upstream {role!r}; got {sorted(self.upstream)}")
        return Path(self.upstream[role].path)


def compute_stage_key(
    stage: str, semantic_config: dict[str, Any], upstream_keys: dict[str, str], seed: int
) -> str:
    payload = {
        "stage": str(stage),
        "version": stage_version(stage),
        "config": semantic_config,
        "upstream": dict(sorted(upstream_keys.items())),
        "seed": seed,
    }
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def load_spec(path: str | Path) -> StageSpec:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"stage spec not found: {path}")
    return StageSpec.model_validate_json(path.read_text())


def result_problem(spec: StageSpec, out_dir: Path) -> str | None:
    """Why `out_dir` cannot serve as this spec's result (None if it can): no or a broken manifest,
    or an upstream whose content changed since the result was computed."""
    if problem := verify_stage_dir(out_dir):
        return problem
    recorded = read_manifest(out_dir).get("upstream", {})
    for role, upstream in spec.upstream.items():
        if recorded.get(role, {}).get("digest") != upstream.manifest_digest:
            return f"upstream {role!r} ({upstream.name}) changed since this result was computed"
    return None
