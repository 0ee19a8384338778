"""GPU smoke of the shipped presets at the real vocabulary: what breaks a preset before a real run.

Every stage program of `configs/qwen3-8b-to-1.7b.yaml` runs once on tiny random Qwen3 models with
the real vocabulary (151,936) and tokenizer, 1,536-token completions (random models never stop
early, so every completion is full length: full-vocabulary logits of [B, ~1.7k, 151,936] in the
warmup, OPD and diagnostics), bf16 compute on fp32 master weights, and:
  - the local launcher (one process): the diagnostics' device placement and memory;
  - the shipped FSDP config (infra/accelerate/fsdp.yaml) on min(2, GPUs) processes: its wrap policy,
    cpu-RAM-efficient loading and the teacher sharded by TRL;
  - ZeRO-3 (infra/accelerate/zero3.yaml) where DeepSpeed is installed;
  - vLLM for GRPO/OPD sampling, rollouts and eval where vllm is installed.
Each prints peak GPU memory per stage. Skipped without CUDA. One prepared command runs it all:

    S2D_SHARED_DIR=/path/to/shared pytest -m gpu tests/gpu/test_real_presets.py -x -s
"""

import importlib.util
import re
from pathlib import Path

import pytest
import torch

from sparse2dense.config import load_config
from sparse2dense.data import load_records
from sparse2dense.store import read_manifest
from tests.stage_runner import free_port
from tests.tiny_models import (
    SHARED,
    have_tokenizers,
    run_preset_stages,
    save_qwen3,
    tiny_data_dir,
    tiny_preset_overrides,
)

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
    pytest.mark.skipif(not have_tokenizers() or not (SHARED / "data").is_dir(), reason="needs ../shared"),
]

ROOT = Path(__file__).resolve().parents[2]
PRESET = ROOT / "configs" / "qwen3-8b-to-1.7b.yaml"
TOKENS = 1536
PEAK = re.compile(r"peak GPU memory ([\d.]+) GiB allocated")


def _launcher(config_file: str) -> list[str]:
    return [
        "launcher.kind=accelerate",
        f"launcher.num_processes={min(2, torch.cuda.device_count())}",
        f"launcher.config_file={config_file}",
        f"launcher.main_process_port={free_port()}",
    ]


LAUNCHERS = {
    "local": None,
    "fsdp": _launcher("infra/accelerate/fsdp.yaml"),
    "zero3": _launcher("infra/accelerate/zero3.yaml"),
}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu-models")
    return {
        "teacher": save_qwen3(root / "teacher", layers=2, hidden=256, heads=4, kv_heads=2, seed=1),
        "student": save_qwen3(root / "student", layers=2, hidden=128, heads=4, kv_heads=2, seed=2),
        "data": tiny_data_dir(root / "data"),
    }


def _run(tmp_path, models, launcher, vllm=False) -> dict[str, float | None]:
    """Run every stage; peak GPU memory (GiB) per stage, printed as a table."""
    overrides = tiny_preset_overrides(
        models["data"],
        models["teacher"],
        models["student"],
        tokens=TOKENS,
        dtype="bfloat16",
        vllm=vllm,
        launcher=launcher,
    )
    memory = "{bf16: true, gradient_checkpointing: true}"  # what the preset asks for on its GPUs
    overrides += [f"{s}.memory={memory}" for s in ("teacher_rl", "warmup", "opd", "student_rl")]
    runner = run_preset_stages(load_config(PRESET, overrides), tmp_path / "store")
    peaks = {}
    for name, output in runner.outputs.items():
        found = [float(m) for m in PEAK.findall(output)]
        peaks[name] = max(found) if found else None
        wall = read_manifest(Path(runner.results[name].path))["wall_s"]
        print(f"{name:20s} wall {wall:7.1f} s   peak {peaks[name]} GiB")
    rollouts = Path(runner.results["teacher_rollouts"].path) / "rollouts" / "train.jsonl"
    lengths = [len(r["completion_ids"]) for r in load_records(rollouts)]
    assert max(lengths) > TOKENS // 2  # long completions really were sampled
    return peaks


@pytest.mark.parametrize("name", ["local", "fsdp", "zero3"])
def test_every_stage_at_real_vocabulary(tmp_path, models, name):
    if name == "zero3" and importlib.util.find_spec("deepspeed") is None:
        pytest.skip("deepspeed is not installed")
    peaks = _run(tmp_path, models, LAUNCHERS[name])
    trained = ("teacher_rl", "warmup", "opd", "student_rl")
    assert all(peaks[s] for s in trained)


def test_every_stage_on_vllm(tmp_path, models):
    pytest.importorskip("vllm")
    peaks = _run(tmp_path, models, None, vllm=True)
    assert peaks["teacher_rl"]
