"""Manifests: written last, verified before a cached result is trusted."""

from sparse2dense.store import MANIFEST, result_from_dir, verify_stage_dir, write_manifest


def _stage(tmp_path):
    root = tmp_path / "stage"
    (root / "model").mkdir(parents=True)
    (root / "model" / "weights.bin").write_bytes(b"abc")
    (root / "checkpoints").mkdir()
    (root / "checkpoints" / "ignored").write_text("x")
    write_manifest(root, {"key": "k", "stage": "base", "metrics": {"loss": 1.5}, "labeled_examples": 3})
    return root


def test_manifest_lists_files_but_not_checkpoints(tmp_path):
    root = _stage(tmp_path)
    result = result_from_dir(root, "base/teacher")
    assert verify_stage_dir(root) is None
    assert result.metrics == {"loss": 1.5} and result.labeled_examples == 3
    assert "checkpoints/ignored" not in (root / MANIFEST).read_text()


def test_missing_file_is_detected(tmp_path):
    root = _stage(tmp_path)
    (root / "model" / "weights.bin").unlink()
    assert "missing file" in verify_stage_dir(root)


def test_corrupted_file_is_detected(tmp_path):
    root = _stage(tmp_path)
    (root / "model" / "weights.bin").write_bytes(b"abd")
    assert "digest mismatch" in verify_stage_dir(root)


def test_no_manifest_is_not_a_result(tmp_path):
    (tmp_path / "partial").mkdir()
    assert "no manifest" in verify_stage_dir(tmp_path / "partial")


def test_digest_ignores_wall_time_but_not_content(tmp_path):
    from sparse2dense.store import manifest_digest

    root = _stage(tmp_path)
    before = manifest_digest(root)
    write_manifest(
        root, {"key": "k", "stage": "base", "metrics": {"loss": 1.5}, "labeled_examples": 3, "wall_s": 9}
    )
    assert manifest_digest(root) == before
    (root / "model" / "weights.bin").write_bytes(b"xyz")
    write_manifest(root, {"key": "k", "stage": "base", "metrics": {"loss": 1.5}, "labeled_examples": 3})
    assert manifest_digest(root) != before
