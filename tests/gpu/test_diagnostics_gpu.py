"""Divergence diagnostics with the models on a GPU: inputs follow the models' device, and the
result equals the CPU measurement. Skipped without CUDA; run with `pytest -m gpu`."""

import pytest
import torch

from tests.test_diagnostics import _model, _pairs

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


def test_measurement_runs_on_the_models_device_and_matches_cpu():
    from sparse2dense.diagnostics import measure_divergence

    teacher, student = _model(97, 32, 2, seed=0), _model(97, 16, 1, seed=1)
    pairs = _pairs(97, seed=2)
    on_cpu = measure_divergence(teacher, student, pairs, pad_id=0, batch_size=2, chunk_tokens=3)
    on_gpu = measure_divergence(teacher.cuda(), student.cuda(), pairs, pad_id=0, batch_size=2, chunk_tokens=3)
    assert on_gpu == pytest.approx(on_cpu, abs=1e-4)
