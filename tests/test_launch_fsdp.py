"""The shipped FSDP configs' wrap policy, applied by accelerate's own code to Qwen3 and Llama models.

accelerate runs FSDP only on accelerators (on CPU it falls back to MULTI_CPU data parallel), so the
multi-process FSDP path cannot run here. What decides whether it starts can: `accelerate launch`
turns the config file into environment variables (`prepare_multi_gpu_env`), the FSDP plugin reads
them, and `fsdp2_prepare_auto_wrap_policy` builds the policy `fsdp2_prepare_model` shards with; a
layer class named in the config but missing from the model is an error there. Each model family
must get one FSDP unit per decoder layer, and the teacher (prepared after the student with the same
plugin, as TRL does) too.
"""

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
FSDP_CONFIGS = [
    p
    for p in sorted((ROOT / "infra" / "accelerate").glob("*.yaml"))
    if yaml.safe_load(p.read_text())["distributed_type"] == "FSDP"
]


def launch_env(config_file: Path) -> dict[str, str]:
    """The environment `accelerate launch --config_file ...` gives each process."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_multi_gpu_env

    args = launch_command_parser().parse_args(["--config_file", str(config_file), "train.py"])
    args, _, _ = _validate_launch_command(args)
    return prepare_multi_gpu_env(args)


def tiny(family: str, layers: int = 2):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM

    shape = {
        "vocab_size": 128,
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": layers,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
    }
    if family == "qwen3":
        return Qwen3ForCausalLM(Qwen3Config(**shape, head_dim=8))
    return LlamaForCausalLM(LlamaConfig(**shape))


def wrapped_units(plugin, model) -> list[str]:
    """Class names of the modules accelerate's FSDP2 wrap policy gives their own unit."""
    from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy, get_module_children_bottom_up

    plugin.set_auto_wrap_policy(model)  # what fsdp2_prepare_model does first
    policy = fsdp2_prepare_auto_wrap_policy(plugin, model)
    return [type(m).__name__ for m in get_module_children_bottom_up(model)[:-1] if policy(m)]


@pytest.fixture
def plugin_for(monkeypatch):
    def build(config_file: Path):
        from accelerate.utils import FullyShardedDataParallelPlugin

        for name, value in launch_env(config_file).items():
            monkeypatch.setenv(name, value)
        return FullyShardedDataParallelPlugin()

    return build


@pytest.mark.parametrize("family", ["qwen3", "llama"])
@pytest.mark.parametrize("path", FSDP_CONFIGS, ids=lambda p: p.name)
def test_every_decoder_layer_is_its_own_unit(path, family, plugin_for):
    plugin = plugin_for(path)
    assert plugin.fsdp_version == 2
    student, teacher = tiny(family, layers=2), tiny(family, layers=3)
    layer = "Qwen3DecoderLayer" if family == "qwen3" else "LlamaDecoderLayer"
    assert wrapped_units(plugin, student) == [layer] * 2
    assert wrapped_units(plugin, teacher) == [layer] * 3


@pytest.mark.parametrize("path", FSDP_CONFIGS, ids=lambda p: p.name)
def test_models_are_loaded_once_per_machine_and_kept_fp32(path, plugin_for):
    """cpu_ram_efficient_loading: transformers loads on the main process only (the rest on meta) and
    accelerate shards from there; bf16 mixed precision keeps fp32 master weights in the shards."""
    import torch

    plugin = plugin_for(path)
    assert plugin.cpu_ram_efficient_loading is True
    plugin.set_mixed_precision("bf16")
    policy = plugin.mixed_precision_policy
    assert policy.param_dtype == torch.bfloat16  # compute
    env = launch_env(path)
    assert env["ACCELERATE_USE_FSDP"] == "true" and env["FSDP_CPU_RAM_EFFICIENT_LOADING"] == "true"


def test_stage_models_stay_off_the_gpu_under_fsdp(monkeypatch):
    """Under FSDP `load_model` leaves placement to accelerate (no whole fp32 copy on any GPU)."""
    from sparse2dense.models import fsdp_enabled

    assert fsdp_enabled({"ACCELERATE_USE_FSDP": "true"})
    assert not fsdp_enabled({})
    for path in FSDP_CONFIGS:
        assert fsdp_enabled(launch_env(path))
