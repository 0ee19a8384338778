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
