"""Damage to the artifact store: a cached result that no longer verifies is named and recomputed,
byte for byte what it was, and nothing a full disk cut short is ever trusted.

Five kinds of damage, each to its own stage of the shared micro run, then one rerun: a truncated
safetensors file, a flipped byte in eval records, a deleted manifest, a manifest cut in half and a
deleted stage folder. Only the damaged stages are recomputed (the rest stay cached, since each
recompute reproduces the same manifest digest). A full disk is a real file-size limit
(RLIMIT_FSIZE) on the process that writes: a stage program and the store's atomic JSON writer.
"""

import json
import logging
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from sparse2dense.config import load_config
from sparse2dense.launch import stage_command
from sparse2dense.spec import load_spec, result_problem
from sparse2dense.store import MANIFEST, manifest_digest, read_manifest, verify_stage_dir
from tests.conftest import MICRO, ROOT, TOY
from tests.stage_runner import stage_env


def _config(workdir: Path):
    paths = [f"store_dir={workdir / 'store'}", f"runs_dir={workdir / 'runs'}"]
    return load_config(TOY, [*MICRO, *paths])


def _snapshot(stage_path: Path) -> dict:
    manifest = read_manifest(stage_path)
    return {"digest": manifest_digest(stage_path), "files": manifest["files"]}


def _cut(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


# damage -> (stage, what to do to its directory, what the warning says about it)
DAMAGE = {
    "truncated safetensors": (
        "teacher_rl",
        lambda d: _cut(d / "model" / "model.safetensors"),
        "size mismatch for {dir}/model/model.safetensors",
    ),
    "flipped byte in records": (
        "eval/teacher_base",
        lambda d: _flip_a_byte(d / "records" / "toy_test.jsonl"),
        "digest mismatch for {dir}/records/toy_test.jsonl",
    ),
    "deleted manifest": ("data_prep", lambda d: (d / MANIFEST).unlink(), "no manifest in {dir}"),
    "cut manifest": (
        "eval/student_base",
        lambda d: _cut(d / MANIFEST),
        "unreadable manifest {dir}/manifest.json",
    ),
    "deleted stage folder": ("eval/student_final", shutil.rmtree, "no manifest in {dir}"),
}


class _Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture(scope="module")
def damaged(micro_run, micro_workdir):
    """Every kind of damage at once, one rerun: (snapshots before, the rerun's summary, warnings)."""
    from flows.post_train import post_train

    stages = micro_run["stages"]
    before = {stage: _snapshot(Path(stages[stage]["path"])) for stage, _, _ in DAMAGE.values()}
    for stage, harm, _ in DAMAGE.values():
        harm(Path(stages[stage]["path"]))
    warnings = _Warnings()
    logging.getLogger().addHandler(warnings)
    try:
        summary = post_train(_config(micro_workdir))
    finally:
        logging.getLogger().removeHandler(warnings)
    return before, summary, warnings.lines


@pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
def test_damage_is_named_and_the_stage_recomputed_byte_identically(damaged, damage):
    before, summary, warnings = damaged
    stage, _, named = DAMAGE[damage]
    entry = summary["stages"][stage]
    expected = f"stage {stage}: cached result unusable ({named.format(dir=entry['path'])}"
    assert any(line.startswith(expected) for line in warnings), (expected, warnings)
    assert entry["status"] == "computed"
    assert verify_stage_dir(Path(entry["path"])) is None
    assert _snapshot(Path(entry["path"])) == before[stage]  # same bytes, same manifest digest


def test_only_the_damaged_stages_are_recomputed(damaged):
    _, summary, _ = damaged
    computed = {name for name, e in summary["stages"].items() if e["status"] == "computed"}
    assert computed == {stage for stage, _, _ in DAMAGE.values()}


def _limit_file_size(limit: int):
    """A child's file-size limit: writes past `limit` bytes fail with EFBIG, as on a full disk."""

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write instead of killing the process

    return apply


@pytest.mark.parametrize("stage", ["data_prep", pytest.param("base/student", marks=pytest.mark.slow)])
def test_a_full_disk_fails_a_stage_cleanly_and_a_rerun_recomputes_it(
    micro_run, micro_workdir, tmp_path, stage
):
    """The stage's program run as the stage task runs it, on a disk that fills at 16 KB: it exits
    non-zero with the write's error and leaves no result to trust (base/student: while saving its
    first checkpoint, which the rerun then skips); the rerun on a free disk writes the same files as
    the shared run."""
    from tasks.fanout import threads_per_stage

    cached = Path(micro_run["stages"][stage]["path"])
    spec = load_spec(cached / "spec.json").model_copy(update={"output_dir": str(tmp_path / "out")})
    out_dir = Path(spec.output_dir)
    out_dir.mkdir()
    spec_path = out_dir / "spec.json"
    spec_path.write_text(spec.model_dump_json(indent=2))
    threads = str(threads_per_stage(_config(micro_workdir).schedule) or 1)  # as the flow ran it
    env = stage_env(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    cmd = stage_command(spec.stage, str(spec_path), spec.inputs.launcher)

    full = subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, preexec_fn=_limit_file_size(16 * 1024)
    )
    assert full.returncode != 0
    assert "File too large" in full.stdout + full.stderr
    assert not (out_dir / MANIFEST).exists()
    assert result_problem(spec, out_dir) == f"no manifest in {out_dir}"
    if stage == "base/student":
        assert list((out_dir / "checkpoints").glob("checkpoint-*")), "the first checkpoint was not cut off"

    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    if stage == "base/student":
        assert "starting over (skipped and removed damaged checkpoint-" in again.stdout
    assert result_problem(spec, out_dir) is None
    files, reference = read_manifest(out_dir)["files"], read_manifest(cached)["files"]
    assert files.pop("spec.json") != reference.pop("spec.json")  # it names its own output_dir
    assert files == reference


def test_the_atomic_writer_on_a_full_disk_keeps_the_old_file_whole(tmp_path):
    from sparse2dense.store import write_json_atomic

    path = tmp_path / MANIFEST
    write_json_atomic(path, {"files": {}, "key": "old"})
    old = path.read_bytes()
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from sparse2dense.store import write_json_atomic\n"
        "write_json_atomic(Path(sys.argv[1]), {'files': {}, 'key': 'x' * 100_000})\n"
    )
    full = subprocess.run(
        [sys.executable, "-c", code, str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        preexec_fn=_limit_file_size(16 * 1024),
    )
    assert full.returncode != 0 and "File too large" in full.stderr
    assert path.read_bytes() == old  # readers see the old file, never a cut-off new one
    assert [p.name for p in tmp_path.iterdir()] == [MANIFEST]  # no temp file left behind
    assert json.loads(old)["key"] == "old"
