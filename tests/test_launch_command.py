"""The stage command builder and the launcher/memory-plan parts of the config (pure, no processes)."""

import sys
from pathlib import Path

import pytest

from sparse2dense.config import ConfigError, load_config
from sparse2dense.graph import StageKind, current
from sparse2dense.launch import (
    DeviceFacts,
    batch_fields,
    is_main_process,
    split_batch,
    stage_command,
    world_size_of,
)
from sparse2dense.pipeline import plan_keys, stage_payload
from sparse2dense.placement import LauncherSection
from sparse2dense.schema import semantic_dump
from sparse2dense.stages import Stage

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / "configs" / "toy.yaml"


def test_local_command():
    assert stage_command(Stage.OPD, "/s/spec.json", None, python="py") == [
        "py",
        "-m",
        "sparse2dense.stages.opd",
        "/s/spec.json",
    ]
    assert stage_command("warmup", "s.json", LauncherSection(), python="py")[1:3] == [
        "-m",
        "sparse2dense.stages.warmup",
    ]


def test_accelerate_command_for_training_stages():
    launcher = LauncherSection(
        kind="accelerate",
        num_processes=16,
        num_machines=2,
        machine_rank=1,
        main_process_ip="10.0.0.1",
        main_process_port=29500,
        config_file="/cfg/zero3.yaml",
    )
    cmd = stage_command(Stage.TEACHER_RL, "/s/spec.json", launcher, python="py")
    assert cmd == [
        "py",
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        "/cfg/zero3.yaml",
        "--num_processes",
        "16",
        "--num_machines",
        "2",
        "--machine_rank",
        "1",
        "--main_process_ip",
        "10.0.0.1",
        "--main_process_port",
        "29500",
        "-m",
        "sparse2dense.stages.teacher_rl",
        "/s/spec.json",
    ]
    # The JSON dump carried in SPEC.json gives the same command.
    # what SPEC.json carries reads back to the same command
    assert (
        stage_command(Stage.TEACHER_RL, "/s/spec.json", LauncherSection(**launcher.model_dump()), "py") == cmd
    )


def test_optional_launcher_fields_are_left_out():
    cmd = stage_command(Stage.OPD, "s.json", LauncherSection(kind="accelerate", num_processes=2), python="py")
    assert "--config_file" not in cmd and "--main_process_ip" not in cmd
    assert cmd[cmd.index("--num_processes") + 1] == "2"
    assert cmd[-3:] == ["-m", "sparse2dense.stages.opd", "s.json"]


@pytest.mark.parametrize("stage", [s for s in Stage if current().stage(s).kind is not StageKind.TRAINING])
def test_generation_and_data_stages_always_run_local(stage):
    launcher = LauncherSection(kind="accelerate", num_processes=8)
    assert stage_command(stage, "s.json", launcher, python="py") == [
        "py",
        "-m",
        f"sparse2dense.stages.{stage}",
        "s.json",
    ]
    assert world_size_of(launcher, stage) == 1


def test_default_python_is_this_interpreter():
    assert stage_command(Stage.BASE, "s.json")[0] == sys.executable


def test_launcher_is_not_semantic_and_reaches_training_specs():
    cfg = load_config(TOY)
    launched = load_config(
        TOY,
        [
            "launcher.kind=accelerate",
            "launcher.num_processes=2",
            "launcher.config_file=infra/accelerate/cpu-2proc.yaml",
        ],
    )
    assert plan_keys(cfg) == plan_keys(launched)
    config, semantic = stage_payload(launched, Stage.OPD)
    assert config["launcher"]["num_processes"] == 2 and "launcher" not in semantic
    assert Path(config["launcher"]["config_file"]).is_absolute()
    assert Path(config["launcher"]["config_file"]).is_file()
    assert "launcher" not in stage_payload(launched, Stage.EVAL, "student")[0]


def test_memory_plan_is_not_semantic():
    cfg = load_config(TOY)
    planned = load_config(TOY, ["opd.memory.per_device_train_batch_size=8", "opd.memory.bf16=false"])
    assert plan_keys(cfg) == plan_keys(planned)
    assert "memory" not in semantic_dump(planned.opd)
    assert "vllm_gpu_memory_utilization" not in semantic_dump(planned.teacher_rl)


def test_memory_plan_must_reach_the_global_batch():
    # toy: opd.prompts_per_step = 32 on one process
    load_config(TOY, ["opd.memory.per_device_train_batch_size=8", "opd.memory.gradient_accumulation_steps=4"])
    with pytest.raises(ConfigError, match=r"opd\.memory.*8 x 1 processes x 3"):
        load_config(
            TOY, ["opd.memory.per_device_train_batch_size=8", "opd.memory.gradient_accumulation_steps=3"]
        )
    with pytest.raises(ConfigError, match=r"base\.memory.*; warmup\.memory: global batch 32 does not split"):
        load_config(TOY, ["launcher.kind=accelerate", "launcher.num_processes=3"])


def test_launcher_consistency():
    with pytest.raises(ConfigError, match="kind: accelerate"):
        load_config(TOY, ["launcher.num_processes=2"])
    with pytest.raises(ConfigError, match="main_process_ip"):
        load_config(TOY, ["launcher.kind=accelerate", "launcher.num_processes=4", "launcher.num_machines=2"])
    with pytest.raises(ConfigError, match=r"launcher\.kind"):
        load_config(TOY, ["launcher.kind=slurm"])


def test_split_batch():
    assert split_batch(4096, 8, 16, None, "x") == (16, 32)
    assert split_batch(4096, 8, None, 32, "x") == (16, 32)
    assert split_batch(64, 1, None, None, "x") == (64, 1)
    with pytest.raises(ValueError, match="not the global batch 4096"):
        split_batch(4096, 8, 16, 16, "x")
    with pytest.raises(ValueError, match="not a multiple"):
        split_batch(100, 8, 16, None, "x")
    facts = DeviceFacts(cuda=True, bf16_supported=True, world_size=4)
    assert batch_fields(64, None, facts, "x") == {
        "per_device_train_batch_size": 16,
        "gradient_accumulation_steps": 1,
    }


def test_main_process_from_environment():
    assert is_main_process({})
    assert is_main_process({"RANK": "0", "WORLD_SIZE": "2"})
    assert not is_main_process({"RANK": "1", "WORLD_SIZE": "2"})
