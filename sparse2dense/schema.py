"""The base of every config model: frozen sections, unknown keys rejected, field docstrings as help,
and the rule that decides which fields enter a stage's cache key.

Fields marked `semantic=False` (logging cadence, checkpoint cadence, run names, where and how many
at once stages run) do not change a stage's output and are left out of its cache key
(`semantic_dump`).
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema

NON_SEMANTIC = {"semantic": False}


class Section(BaseModel):
    """Every field's docstring is its description: the help text of the Prefect form and of
    `s2d validate --explain`, and the `description` of the JSON schema."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


# A name becomes a directory (runs/sweeps/NAME/, runs/flows/<id>/ARM@seedN/) and an MLflow name
# (experiment, registered model NAME-student): ASCII letters, digits, '_', '.', '-', starting with a
# letter, digit or '_' (so never '.', '..' or an option), which MLflow takes as it is.
NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$"
NAME_MAX_LENGTH = 64


def check_name(value: str) -> str:
    """`value` if it is a valid name (`Name`), else a ValueError saying what a name may hold."""
    if len(value) > NAME_MAX_LENGTH or not re.fullmatch(NAME_PATTERN, value):
        raise ValueError(
            f"{value!r} is not a valid name: 1 to {NAME_MAX_LENGTH} ASCII letters, digits, '_', '.' or "
            "'-', not starting with '.' or '-' (it names directories and MLflow entries)"
        )
    return value


NAME_JSON_SCHEMA = {"type": "string", "pattern": NAME_PATTERN, "maxLength": NAME_MAX_LENGTH}
Name = Annotated[str, AfterValidator(check_name), WithJsonSchema(NAME_JSON_SCHEMA)]

Positive = Annotated[int, Field(gt=0)]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]
LearningRate = Annotated[float, Field(gt=0.0, lt=1.0)]


def semantic_dump(value: Any) -> Any:
    """The parts of a section that change a stage's output, recursively (through nested sections,
    and dicts and lists of them), as plain JSON values."""
    if isinstance(value, BaseModel):
        out: dict[str, Any] = {}
        for name, field in type(value).model_fields.items():
            extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
            if extra.get("semantic") is not False:
                out[name] = semantic_dump(getattr(value, name))
        return out
    if isinstance(value, dict):
        return {str(k): semantic_dump(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [semantic_dump(v) for v in value]
    return json.loads(json.dumps(value, default=str))
