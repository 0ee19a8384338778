"""Generation backend selection."""

import pytest

from sparse2dense.generation import resolve_backend


def test_auto_backend_falls_back_to_transformers():
    assert resolve_backend("auto") == "transformers"
    assert resolve_backend("transformers") == "transformers"
    with pytest.raises((RuntimeError, NotImplementedError)):
        resolve_backend("vllm")
