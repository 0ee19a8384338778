"""Shared fixtures: a session-scoped Prefect test server, a tiny toy config and one run of it."""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / "configs" / "toy.yaml"

# A toy world small enough that the whole pipeline runs in about a minute on 2 cores: short sums of
# three two-digit terms, tiny models, a few steps per stage.
MICRO = [
    "data.toy.min_terms=3",
    "data.toy.max_terms=3",
    "data.toy.max_operand=30",
    "data.toy.base_noise=0.3",
    "base.student_max_terms=3",
    "data.toy.num_base=600",
    "data.toy.num_labeled=64",
    "data.toy.num_unlabeled=96",
    "data.toy.num_test=16",
    "teacher.toy.hidden_size=64",
    "teacher.toy.intermediate_size=128",
    "teacher.toy.num_hidden_layers=2",
    "student.toy.hidden_size=32",
    "student.toy.intermediate_size=64",
    "student.toy.num_hidden_layers=1",
    "base.teacher_steps=60",
    "base.student_steps=30",
    "teacher_rl.steps=3",
    "teacher_rl.prompts_per_step=4",
    "teacher_rl.num_generations=4",
    "warmup.epochs=2",
    "warmup.learning_rate=3e-3",
    "opd.steps=4",
    "opd.prompts_per_step=16",
    "opd.learning_rate=1e-3",
    "opd.diagnostic_prompts=16",
    "eval.samples_per_problem=2",
]


@pytest.fixture(scope="session")
def prefect_server():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="session")
def smollm2_gguf():
    """The verified SmolLM2-135M-Instruct GGUF under models/ (fetched once by `make smollm2`).

    Absent: a skip for a developer, a failure under CI, which must run the real-model tests."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("fetch_smollm2", ROOT / "infra/models/fetch_smollm2.py")
    fetch = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fetch)
    path = ROOT / "models" / fetch.GGUF
    if not path.is_file():
        reason = f"{path} is absent: run `make smollm2` (one-time download, about 93 MB)"
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):
            pytest.fail(f"CI is set and {reason}", pytrace=False)
        pytest.skip(reason)
    actual, expected = fetch.sha256_file(path), fetch.expected_gguf_sha256()
    if actual != expected:
        pytest.fail(
            f"sha256 mismatch for {path}: expected {expected}, got {actual}; delete it and run `make smollm2`",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def smollm2_store(smollm2_gguf, tmp_path_factory):
    """A store holding the GGUF's conversion, made once per session (about 20 s on 2 cores)."""
    from sparse2dense.gguf import convert_gguf

    store = tmp_path_factory.mktemp("gguf-store")
    convert_gguf(smollm2_gguf, store)
    return store


@pytest.fixture(scope="session")
def smollm2_model(smollm2_gguf, smollm2_store):
    """The converted SmolLM2 model folder (safetensors, tokenizer, chat template)."""
    from sparse2dense.gguf import convert_gguf

    return convert_gguf(smollm2_gguf, smollm2_store)


@pytest.fixture(scope="session")
def micro_workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("pipeline")


@pytest.fixture(scope="session")
def micro_run(prefect_server, micro_workdir):
    """One post-train run of the micro world, shared by the modules that inspect a finished run
    (test_flow.py, test_registry.py)."""
    from flows.post_train import post_train
    from sparse2dense.config import load_config

    paths = [f"store_dir={micro_workdir / 'store'}", f"runs_dir={micro_workdir / 'runs'}"]
    return post_train(load_config(TOY, [*MICRO, *paths]))
