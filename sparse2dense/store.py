"""The artifact store: keyed stage directories, their manifests, and the checks before trusting one.

A stage writes `<store>/<stage>/<key>/`; `manifest.json` is written last, atomically (temp file +
rename), and lists every file with its size and sha256. A directory without a verifying manifest
is not a result: a crash can never be mistaken for a finished stage.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

MANIFEST = "manifest.json"
# Trainer checkpoints and generation shards a stage keeps while it runs, to resume from.
CHECKPOINTS = "checkpoints"
# Files a stage keeps for its own resumption; they are not part of the result.
EXCLUDED_DIRS = {CHECKPOINTS, "_tmp"}


class StageResult(BaseModel):
    """What a task returns: a few KB pointing at a verified stage directory, never models or data."""

    model_config = ConfigDict(frozen=True)

    stage: str
    name: str
    key: str
    path: str
    manifest_digest: str
    metrics: dict[str, float] = {}
    labeled_examples: int = 0
    mlflow_run_id: str | None = None


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def list_result_files(root: Path) -> list[Path]:
    files = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if path.is_file() and rel.parts[0] not in EXCLUDED_DIRS and rel.name != MANIFEST:
            files.append(path)
    return files


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON so that readers see either the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(payload, fh, indent=2, sort_keys=True, default=str)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_manifest(root: Path, fields: dict[str, Any]) -> dict[str, Any]:
    """Hash every result file and write the manifest last. Returns the manifest."""
    files = {
        str(p.relative_to(root)): {"size": p.stat().st_size, "sha256": sha256_file(p)}
        for p in list_result_files(root)
    }
    manifest = {**fields, "files": files}
    write_json_atomic(root / MANIFEST, manifest)
    return manifest


# What identifies a result's content: not its wall time, library versions or whether the run resumed
# from a checkpoint (`resumed_from_step`), so that a recompute that reproduces the same files does not
# invalidate the stages built on it.
CONTENT_FIELDS = ("key", "stage", "files", "metrics", "labeled_examples")


def manifest_digest(root: Path) -> str:
    manifest = read_manifest(root)
    content = {name: manifest.get(name) for name in CONTENT_FIELDS}
    blob = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def read_manifest(root: Path) -> dict[str, Any]:
    return json.loads((root / MANIFEST).read_text())


def verify_stage_dir(root: Path, deep: bool = True) -> str | None:
    """None if the directory holds a complete result, else the reason it does not.

    Sizes are always checked; `deep` also re-hashes every file (seconds for the toy world,
    minutes for an 8B checkpoint, so flows may choose sizes-only for big models).
    """
    path = root / MANIFEST
    if not path.is_file():
        return f"no manifest in {root}"
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        return f"unreadable manifest {path}: {err}"
    for rel, meta in manifest.get("files", {}).items():
        file = root / rel
        if not file.is_file():
            return f"missing file {file}"
        if file.stat().st_size != meta["size"]:
            return f"size mismatch for {file}"
        if deep and sha256_file(file) != meta["sha256"]:
            return f"digest mismatch for {file}"
    return None


def stage_dir(store: Path, stage: str, key: str) -> Path:
    return store / stage / key


def store_of(output_dir: Path) -> Path:
    """The store a stage output directory (`stage_dir`) lives in."""
    return output_dir.parents[1]


def result_from_dir(root: Path, name: str, mlflow_run_id: str | None = None) -> StageResult:
    manifest = read_manifest(root)
    return StageResult(
        stage=manifest["stage"],
        name=name,
        key=manifest["key"],
        path=str(root),
        manifest_digest=manifest_digest(root),
        metrics={k: float(v) for k, v in manifest.get("metrics", {}).items()},
        labeled_examples=int(manifest.get("labeled_examples", 0)),
        mlflow_run_id=mlflow_run_id,
    )
