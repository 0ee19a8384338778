"""A config explained field by field: `s2d validate --explain`, and the check that every field has help.

Each line is a field's dotted path, its resolved value, whether it enters the cache key (a field
marked `semantic=False`, or one inside such a section, does not), and its description: the same
text the Prefect form shows under the field and the JSON schema carries.
"""

from __future__ import annotations

import json
import types
import typing
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo


@dataclass(frozen=True)
class FieldLine:
    path: str
    value: Any  # None for a section that is set (its fields follow)
    in_key: bool
    description: str
    is_section: bool = False


def is_semantic(field: FieldInfo) -> bool:
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    return extra.get("semantic") is not False


def explain(model: BaseModel, prefix: str = "", in_key: bool = True) -> list[FieldLine]:
    """Every field of `model`, depth first, sections before their fields."""
    lines = []
    for name, field in type(model).model_fields.items():
        path, value = f"{prefix}{name}", getattr(model, name)
        semantic = in_key and is_semantic(field)
        if isinstance(value, BaseModel):
            lines.append(FieldLine(path, None, semantic, field.description or "", is_section=True))
            lines += explain(value, f"{path}.", semantic)
        else:
            lines.append(FieldLine(path, value, semantic, field.description or ""))
    return lines


def render(lines: list[FieldLine]) -> str:
    """One line per field: `path = value`, `key` or `-`, description."""
    cells = [(line.path if line.is_section else f"{line.path} = {json.dumps(line.value)}") for line in lines]
    width = min(max(len(c) for c in cells), 56)
    out = [f"{'field = value':<{width}}  key  description"]
    for cell, line in zip(cells, lines, strict=True):
        flag = "key" if line.in_key else "-"
        out.append(f"{cell:<{width}}  {flag:<3}  {line.description}")
    return "\n".join(out)


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType, list, dict, typing.Annotated):
        return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]
    return []


def schema_models(*roots: type[BaseModel]) -> list[type[BaseModel]]:
    """Every model class reachable from `roots` through field types (unions, lists, dicts)."""
    seen: list[type[BaseModel]] = []
    todo = list(roots)
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.append(model)
        for field in model.model_fields.values():
            todo += _models_in(field.annotation)
    return seen


def undocumented_fields(*roots: type[BaseModel]) -> list[str]:
    """`Model.field` for every field without a description, over all models reachable from `roots`."""
    return [
        f"{model.__name__}.{name}"
        for model in schema_models(*roots)
        for name, field in model.model_fields.items()
        if not (field.description or "").strip()
    ]
