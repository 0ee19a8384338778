"""Tiny random models on the real tokenizers in ../shared/tokenizers (S2D_SHARED_DIR overrides).

`save_qwen3` writes a Qwen3 checkpoint built from the real Qwen3-1.7B config (vocabulary 151,936,
tied embeddings, bf16 weights) shrunk to a few layers, with the real tokenizer, chat template and
generation config beside it: what `from_pretrained` of the hub model returns, minus the size.
`save_bos_llama` writes a Llama model on a tokenizer that adds a BOS (Mixtral's) with a chat
template that writes the BOS itself, as Llama 3's does. `tiny_preset_overrides` cuts a GPU preset
down to such models and a few rows of the shared data (`tiny_data_dir`); `run_preset_stages` runs
its stage programs in order, as the flow would.
"""

import json
import os
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("S2D_SHARED_DIR") or ROOT.parent / "shared")
TOKENIZERS = SHARED / "tokenizers"
QWEN3 = TOKENIZERS / "qwen3"
BOS_TOKENIZER = TOKENIZERS / "mixtral-8x22b-v0.1"
# Mistral-style turns; like Llama 3's template it opens with the BOS token as text.
BOS_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}[INST] {{ message['content'] }} [/INST]{% endfor %}"
)


def have_tokenizers() -> bool:
    return (QWEN3 / "tokenizer.json").is_file() and (BOS_TOKENIZER / "tokenizer.json").is_file()


def save_qwen3(
    target: Path,
    *,
    layers: int = 1,
    hidden: int = 32,
    heads: int = 4,
    kv_heads: int = 2,
    seed: int = 0,
    dtype: str = "bfloat16",
    tied: bool = True,
) -> Path:
    """A random Qwen3 with the real vocabulary and tokenizer files, saved as safetensors."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    raw = json.loads((QWEN3 / "model-configs" / "Qwen3-1.7B.config.json").read_text())
    raw |= {
        "num_hidden_layers": layers,
        "max_window_layers": layers,
        "hidden_size": hidden,
        "intermediate_size": 2 * hidden,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": hidden // heads,
        "max_position_embeddings": 4096,
        "tie_word_embeddings": tied,
    }
    config = AutoConfig.for_model(**raw)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    model.save_pretrained(target, safe_serialization=True)
    AutoTokenizer.from_pretrained(QWEN3).save_pretrained(target)
    shutil.copy(QWEN3 / "generation_config.json", target / "generation_config.json")
    return target


def bos_tokenizer():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(BOS_TOKENIZER)
    tok.chat_template = BOS_TEMPLATE
    return tok


def save_bos_llama(target: Path, *, hidden: int = 32, seed: int = 0) -> Path:
    """A random one-layer Llama on the BOS-adding tokenizer (32,000 tokens) with BOS_TEMPLATE."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = bos_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(target, safe_serialization=True)
    tok.save_pretrained(target)
    return target


def tiny_data_dir(target: Path) -> Path:
    """The shared data files' layout with a handful of rows each (the real schemas)."""
    import datasets

    source = SHARED / "data"
    for rel, rows in [("math_train/train.jsonl", 12), ("math500/test.jsonl", 3)]:
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        lines = (source / rel).read_text().splitlines()[:rows]
        (target / rel).write_text("\n".join(lines) + "\n")
    dapo = datasets.load_dataset(
        "parquet", data_files=str(source / "dapo_math_17k/dapo_math_17k.parquet"), split="train[:24]"
    )
    (target / "dapo_math_17k").mkdir(parents=True, exist_ok=True)
    dapo.to_parquet(str(target / "dapo_math_17k/dapo_math_17k.parquet"))
    return target


def tiny_preset_overrides(
    data_dir: Path,
    teacher: Path,
    student: Path,
    *,
    tokens: int,
    dtype: str = "float32",
    vllm: bool = False,
    launcher: list[str] | None = None,
) -> list[str]:
    """A GPU preset on tiny models: memory plans left to the hardware, `tokens` per completion,
    GRPO keeping the preset's 4 updates per rollout batch, student RL on the replay control."""
    use_vllm = "true" if vllm else "false"
    backend = "vllm" if vllm else "transformers"
    small = [f"use_vllm={use_vllm}", "memory={}", "prompts_per_step=2", "num_generations=2"]
    small += [f"max_completion_length={tokens}", "steps=4"]
    if vllm:
        small += ["vllm_gpu_memory_utilization=0.2"]
    return [
        f"data.data_dir={data_dir}",
        "data.eval_sets=[math500]",
        f"teacher.name_or_path={teacher}",
        f"student.name_or_path={student}",
        f"teacher.dtype={dtype}",
        f"student.dtype={dtype}",
        *(launcher or ["launcher.kind=local", "launcher.num_processes=1", "launcher.config_file=null"]),
        *[f"teacher_rl.{o}" for o in small],
        f"teacher_rollouts.max_new_tokens={tokens}",
        f"teacher_rollouts.backend={backend}",
        "teacher_rollouts.heldout_fraction=0.25",
        "teacher_rollouts.vllm_gpu_memory_utilization=0.3",
        "warmup.batch_size=4",
        "warmup.epochs=0.5",
        f"warmup.max_length={tokens + 512}",
        "warmup.memory={}",
        "opd.steps=2",
        "opd.prompts_per_step=2",
        f"opd.max_completion_length={tokens}",
        "opd.diagnostic_prompts=2",
        f"opd.use_vllm={use_vllm}",
        "opd.vllm_gpu_memory_utilization=0.2",
        "opd.memory={}",
        "student_rl.enabled=true",
        "student_rl.labels=replay",
        *[f"student_rl.{o}" for o in small],
        "eval.samples_per_problem=2",
        f"eval.max_new_tokens={tokens}",
        f"eval.backend={backend}",
        "eval.vllm_gpu_memory_utilization=0.3",
    ]


def run_preset_stages(cfg, store: Path, env_of=None):
    """Every stage program of the plan once, in order (`env_of(name)`: extra environment); the
    runner keeps each stage's console output in `outputs`."""
    from sparse2dense.stages import Stage
    from tests.stage_runner import Runner, stage_env

    runner = Runner(cfg, store)
    runner.outputs = {}
    steps = [
        ("data_prep", Stage.DATA_PREP, None, {}),
        ("teacher_rl", Stage.TEACHER_RL, "teacher", {"data": "data_prep"}),
        ("teacher_rollouts", Stage.TEACHER_ROLLOUTS, None, {"data": "data_prep", "teacher": "teacher_rl"}),
        ("warmup", Stage.WARMUP, None, {"teacher": "teacher_rl", "rollouts": "teacher_rollouts"}),
        ("opd", Stage.OPD, None, {"data": "data_prep", "student": "warmup", "teacher": "teacher_rl"}),
        ("student_rl", Stage.STUDENT_RL, "student", {"data": "data_prep", "policy": "opd"}),
        ("eval/student_final", Stage.EVAL, "student", {"data": "data_prep", "model": "student_rl"}),
    ]
    for name, stage, model, upstream in steps:
        env = stage_env(**(env_of(name) if env_of else {}))
        runner.outputs[name] = runner.run(name, stage, model, env=env, **upstream)[1]
    return runner
