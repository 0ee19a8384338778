"""Reading configuration files: YAML mappings with errors that name the file, line and column, and
`section.field=value` overrides. Kept apart from the schema (`config.py`), which validates the result;
sweep files are read the same way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError


class ConfigError(ValueError):
    """A config that cannot be loaded; the message names the file and the field's dotted path."""


def format_errors(err: ValidationError, source: str, kind: str = "config") -> str:
    """A validation error as one line per field, each naming the field's dotted path."""
    lines = [f"invalid {kind} {source}:"]
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "<root>"
        lines.append(f"  {path}: {e['msg'].removeprefix('Value error, ')}")
    return "\n".join(lines)


def parse_override(item: str) -> tuple[list[str], Any]:
    """`section.field=value` -> (["section", "field"], value); the value is parsed as YAML."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form section.field=value")
    dotted, raw = item.split("=", 1)
    path = [p for p in dotted.strip().split(".") if p]
    if not path:
        raise ConfigError(f"override {item!r} names no field")
    try:
        return path, yaml.safe_load(raw)
    except yaml.YAMLError as err:
        raise ConfigError(
            f"override {item!r}: the value is not valid YAML: {describe_yaml_error(err)}"
        ) from None


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """A copy of `data` with each `a.b.c=value` set; unknown keys are left for validation to reject."""
    result = json.loads(json.dumps(data))
    for item in overrides:
        path, value = parse_override(item)
        node = result
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
            node = child
        node[path[-1]] = value
    return result


def describe_yaml_error(err: yaml.YAMLError) -> str:
    """A YAML error as `line L, column C: problem (context)` plus the offending line, without the
    parser's `in "<unicode string>"` (the caller names the file)."""
    if not isinstance(err, yaml.MarkedYAMLError) or err.problem_mark is None:
        return str(err)
    mark = err.problem_mark
    text = f"line {mark.line + 1}, column {mark.column + 1}: {err.problem}"
    if err.context:
        where = err.context_mark
        at = f" started at line {where.line + 1}, column {where.column + 1}" if where else ""
        text += f" ({err.context}{at})"
    snippet = mark.get_snippet(indent=4)
    return f"{text}\n{snippet}" if snippet and snippet.strip() else text


def read_yaml_mapping(path: str | Path, kind: str = "config") -> dict[str, Any]:
    """A YAML file's top-level mapping (`yaml.safe_load`); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{kind} file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except UnicodeDecodeError as err:
        raise ConfigError(f"{kind} {path} is not UTF-8 text (byte {err.start})") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{kind} {path} is not valid YAML: {describe_yaml_error(err)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{kind} {path} must be a mapping at the top level")
    return data
