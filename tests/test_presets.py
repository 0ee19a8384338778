"""Every shipped preset renders each stage's TRL config through the builders the stage programs use.

No model is loaded and no GPU is needed: the builders take the device facts as an argument, so a
GPU preset is rendered as it would be on its GPUs (bf16 available, the launcher's world size), and
TRL's and transformers' own validation runs on it. A typo in a GPU preset fails here, on CPU.
"""

from pathlib import Path

import pytest
import yaml

from sparse2dense.config import ConfigError, load_config
from sparse2dense.launch import DeviceFacts, world_size_of
from sparse2dense.pipeline import launcher_for_spec, plan_stages, stage_payload
from sparse2dense.spec import StageSpec
from sparse2dense.stages import Stage

ROOT = Path(__file__).resolve().parents[1]
PRESETS = sorted((ROOT / "configs").glob("*.yaml"))  # configs/sweeps/ holds sweeps, not presets
CPU_PRESETS = ("toy.yaml", "smollm2-cpu.yaml")  # the paper's GPU settings are not theirs to follow
GPU_PRESETS = [p for p in PRESETS if p.name not in CPU_PRESETS]
ACCELERATE_CONFIGS = sorted((ROOT / "infra" / "accelerate").glob("*.yaml"))


def _facts(cfg, stage) -> DeviceFacts:
    on_gpu = cfg.teacher.name_or_path is not None
    return DeviceFacts(cuda=on_gpu, bf16_supported=on_gpu, world_size=world_size_of(cfg.launcher, stage))


@pytest.fixture
def gpu_like(monkeypatch):
    """transformers checks bf16 against this machine's GPU and TRL derives the generation batch from
    this process's world size; the facts stand in for the target's. Returns a world-size setter."""
    import transformers.training_args as ta

    monkeypatch.setattr(ta, "is_torch_bf16_gpu_available", lambda: True)
    world = {"size": 1}
    monkeypatch.setattr(ta.TrainingArguments, "world_size", property(lambda self: world["size"]))
    return world


def render(cfg, tmp_path: Path, world: dict | None = None) -> dict[str, object]:
    """Each training stage of the plan -> its TRL config object."""
    from sparse2dense.stages.base import build_sft_config
    from sparse2dense.stages.grpo import build_grpo_config
    from sparse2dense.stages.opd import build_distillation_config
    from sparse2dense.stages.warmup import build_warmup_config

    out = {}
    for planned in plan_stages(cfg):
        config, semantic = stage_payload(cfg, planned.stage, planned.model)
        spec = StageSpec(
            stage=planned.stage,
            name=planned.name,
            key="render",
            config=config,
            semantic_config=semantic,
            output_dir=str(tmp_path / planned.name),
            seed=cfg.seed,
        )
        facts = _facts(cfg, planned.stage)
        if world is not None:
            world["size"] = facts.world_size
        out_dir = Path(spec.output_dir)
        inputs = spec.inputs
        if planned.stage == Stage.BASE:
            out[planned.name] = build_sft_config(inputs.train, spec, out_dir, facts)
        elif planned.stage in (Stage.TEACHER_RL, Stage.STUDENT_RL):
            out[planned.name] = build_grpo_config(inputs.grpo, spec, out_dir, facts)
        elif planned.stage == Stage.WARMUP:
            out[planned.name] = build_warmup_config(inputs.warmup, spec, out_dir, 7000, facts)
        elif planned.stage == Stage.OPD:
            out[planned.name] = build_distillation_config(inputs.opd, spec, out_dir, facts)
    return out


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.name)
def test_preset_renders_every_training_stage(path, tmp_path, gpu_like):
    overrides = ["student_rl.enabled=true"]  # render the optional stage too
    cfg = load_config(path, overrides)
    rendered = render(cfg, tmp_path, gpu_like)
    expected = {name for name, *_ in cfg.training_batches()}
    assert {name.split("/")[0] for name in rendered} == expected
    for name, global_batch, memory, world in cfg.training_batches():
        for stage_name, args in rendered.items():
            if stage_name.split("/")[0] != name:
                continue
            assert args.per_device_train_batch_size * world * args.gradient_accumulation_steps == global_batch
            if memory.bf16 is not None:
                assert args.bf16 is memory.bf16
            if memory.gradient_checkpointing is not None:
                assert args.gradient_checkpointing is memory.gradient_checkpointing
    for name in ("teacher_rl", "student_rl", "opd"):
        section = getattr(cfg, name)
        args = rendered[name]
        assert (args.use_vllm, args.vllm_mode, args.vllm_gpu_memory_utilization) == (
            section.use_vllm,
            section.vllm_mode,
            section.vllm_gpu_memory_utilization,
        )
    for name in ("teacher_rl", "student_rl"):
        section, grpo = getattr(cfg, name), rendered[name]
        # a generation batch of prompts_per_step x steps_per_generation prompts x num_generations
        completions = section.prompts_per_step * section.steps_per_generation * section.num_generations
        assert grpo.generation_batch_size == completions
        assert grpo.steps_per_generation == grpo.gradient_accumulation_steps * section.steps_per_generation
        assert grpo.num_iterations == section.num_iterations
        assert grpo.chat_template_kwargs == dict(cfg.data.chat_template_kwargs)


def updates_per_generation(grpo) -> int:
    """Optimizer updates TRL makes on one generation batch (micro-batches per batch / accumulation)."""
    return grpo.steps_per_generation * grpo.num_iterations // grpo.gradient_accumulation_steps


@pytest.mark.parametrize("path", GPU_PRESETS, ids=lambda p: p.name)
def test_gpu_preset_grpo_updates_like_the_authors(path, tmp_path, gpu_like):
    """verl: a rollout batch of 512 prompts x 8 in 4 optimizer updates of 128 prompts, so three of
    every four updates are off-policy and the 0.2/0.28 clip can act (with one update per rollout
    batch the ratio is always 1); no importance-sampling correction of vLLM's logprobs."""
    cfg = load_config(path, ["student_rl.enabled=true"])
    rendered = render(cfg, tmp_path, gpu_like)
    world = world_size_of(cfg.launcher, "teacher_rl")
    for name in ("teacher_rl", "student_rl"):
        grpo = rendered[name]
        per_update = grpo.per_device_train_batch_size * world * grpo.gradient_accumulation_steps
        assert per_update == 128 * 8
        assert grpo.generation_batch_size == 512 * 8
        assert updates_per_generation(grpo) == 4 > 1
        assert (grpo.epsilon, grpo.epsilon_high) == (0.2, 0.28)
        assert grpo.vllm_importance_sampling_correction is False
        assert grpo.max_steps % updates_per_generation(grpo) == 0
    assert rendered["teacher_rl"].max_steps == 1632  # 408 rollout batches, the authors' run


@pytest.mark.parametrize("path", GPU_PRESETS, ids=lambda p: p.name)
def test_gpu_preset_matches_the_paper(path):
    cfg = load_config(path)
    assert cfg.teacher_rl.prompts_per_step * cfg.teacher_rl.steps_per_generation == 512
    assert cfg.teacher_rl.num_generations == 8
    assert (cfg.teacher_rl.learning_rate, cfg.teacher_rl.weight_decay, cfg.teacher_rl.max_grad_norm) == (
        1e-6,
        0.1,
        1.0,
    )
    assert (cfg.teacher_rl.epsilon_low, cfg.teacher_rl.epsilon_high, cfg.teacher_rl.loss_type) == (
        0.2,
        0.28,
        "dapo",
    )
    assert cfg.teacher_rl.kl_beta == 0.0 and cfg.teacher_rl.max_completion_length == 8192
    assert cfg.opd.learning_rate == 1e-6 and cfg.opd.beta == 1.0
    assert (cfg.opd.prompts_per_step, cfg.opd.weight_decay) == (256, 0.1)
    assert (cfg.eval.samples_per_problem, cfg.eval.temperature, cfg.eval.top_p, cfg.eval.top_k) == (
        16,
        0.7,
        0.8,
        20,
    )
    assert cfg.eval.max_new_tokens == 16384
    assert cfg.launcher.kind == "accelerate" and cfg.launcher.num_processes == 8
    assert Path(launcher_for_spec(cfg.launcher).config_file).is_file()
    header = path.read_text().splitlines()[:12]
    assert any(f"s2d run configs/{path.name}" in line for line in header)


@pytest.mark.parametrize(
    "typo",
    [
        "teacher_rl.memory.gradient_accumulation_steps=255",
        "opd.memory.per_device_train_batch_size=3",
        "teacher_rl.vllm_mode=colocated",
        "warmup.memory.bf16=maybe",
        "launcher.num_processes=6",
    ],
)
def test_typo_in_gpu_preset_is_caught_on_cpu(typo):
    with pytest.raises(ConfigError):
        load_config(ROOT / "configs" / "qwen3-8b-to-1.7b.yaml", [typo])


def test_pairs_share_a_family():
    for path in GPU_PRESETS:
        cfg = load_config(path)
        family = cfg.teacher.name_or_path.split("/")[0]
        assert cfg.student.name_or_path.split("/")[0] == family


@pytest.mark.parametrize("path", ACCELERATE_CONFIGS, ids=lambda p: p.name)
def test_accelerate_configs_load(path):
    from accelerate.commands.config.config_args import load_config_from_file

    loaded = load_config_from_file(str(path))
    raw = yaml.safe_load(path.read_text())
    assert loaded.num_processes == raw["num_processes"]
    if raw["distributed_type"] == "FSDP":
        # accelerate refuses a listed layer class the model lacks: no list, the model's own blocks
        assert "fsdp_transformer_layer_cls_to_wrap" not in loaded.fsdp_config
        assert loaded.fsdp_config["fsdp_cpu_ram_efficient_loading"] is True
    if raw["distributed_type"] == "DEEPSPEED":
        assert loaded.deepspeed_config["zero_stage"] == 3
        assert loaded.deepspeed_config["zero3_save_16bit_model"] is True
