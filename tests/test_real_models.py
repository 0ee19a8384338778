"""The real Qwen3 tokenizer and vocabulary on CPU: what the GPU presets meet before any GPU does.

Tiny random models are built from the real Qwen3-1.7B config (vocabulary 151,936, tied embeddings,
bf16) and saved as safetensors beside the real tokenizer files (tests/tiny_models.py). Checked: the
tokenizer facts of ../shared/tokenizers/README.md, chat rendering without thinking, both EOS ids as
stop tokens, the pre-flight, the exact prompt ids TRL's GRPO and distillation trainers and the
warmup's GKD/SFT data see against the ids eval and rollouts use (one BOS with a BOS-adding
tokenizer), label masks, and fp32 master weights: at lr 1e-6 a bf16-configured student still
moves. Skipped when the shared tokenizers are absent.
"""

from pathlib import Path

import pytest

from sparse2dense.graph import current
from sparse2dense.launch import DeviceFacts
from sparse2dense.prompts import encode_prompt, prompt_conversations, render_prompt
from sparse2dense.sections import GRPOSection, OPDSection, WarmupSection
from sparse2dense.spec import StageSpec
from sparse2dense.stages import Stage
from tests.tiny_models import (
    BOS_TOKENIZER,
    QWEN3,
    SHARED,
    bos_tokenizer,
    have_tokenizers,
    run_preset_stages,
    save_bos_llama,
    save_qwen3,
    tiny_data_dir,
    tiny_preset_overrides,
)

pytestmark = pytest.mark.skipif(not have_tokenizers(), reason="../shared/tokenizers not found")

TEMPLATE = "{problem}\n\nLet's think step by step and output the final answer within \\boxed{}."
NO_THINKING = {"enable_thinking": False}
PROBLEMS = [{"id": "p0", "problem": "What is $1+1$?", "answer": "2"}]
CPU = DeviceFacts(cuda=False, bf16_supported=False)


@pytest.fixture(scope="module")
def qwen_tok():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(QWEN3)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Saved tiny models: Qwen3 (real vocabulary) and a Llama on the BOS-adding tokenizer."""
    root = tmp_path_factory.mktemp("real")
    return {"qwen3": save_qwen3(root / "qwen3"), "bos_llama": save_bos_llama(root / "bos_llama")}


def _spec(stage: Stage, tmp_path: Path, section_name: str, section, kwargs: dict) -> StageSpec:
    config = {section_name: section.model_dump(mode="json")}
    if "prompt" in current().stage(stage).inputs.model_fields:
        config["prompt"] = {"template": TEMPLATE, "chat_template_kwargs": kwargs}
    return StageSpec(
        stage=stage,
        name=str(stage),
        key="k",
        config=config,
        semantic_config={},
        output_dir=str(tmp_path),
        seed=0,
    )


def _tokenizer(path: Path):
    """The tokenizer as the stage programs load it (left padding, pad = EOS where none is set)."""
    from sparse2dense.models import load_tokenizer

    spec = StageSpec(
        stage=Stage.EVAL,
        name="eval",
        key="k",
        config={
            "eval": {},
            "prompt": {"template": TEMPLATE},
            "models": {"model": {"name_or_path": str(path)}},
        },
        semantic_config={},
        output_dir=str(path),
        seed=0,
    )
    return load_tokenizer(spec, "model")


def test_tokenizer_facts(qwen_tok):
    import json

    config = json.loads((QWEN3 / "model-configs" / "Qwen3-8B.config.json").read_text())
    assert len(qwen_tok) == 151669 and config["vocab_size"] == 151936
    assert (qwen_tok.eos_token_id, qwen_tok.pad_token_id) == (151645, 151643)
    assert qwen_tok("Hello, world!")["input_ids"] == [9707, 11, 1879, 0]  # no BOS added
    assert qwen_tok.convert_tokens_to_ids(["<think>", "</think>"]) == [151667, 151668]
    assert bos_tokenizer()("Hello, world!")["input_ids"] == [1, 22557, 28725, 1526, 28808]


def test_chat_rendering_without_thinking(qwen_tok):
    text = render_prompt(qwen_tok, "What is $1+1$?", TEMPLATE, NO_THINKING)
    assert text.startswith("<|im_start|>user\nWhat is $1+1$?\n\nLet's think step by step")
    assert text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    ids = encode_prompt(qwen_tok, text)
    assert ids[0] == qwen_tok.convert_tokens_to_ids("<|im_start|>")
    assert ids[-4:] == [151667, 271, 151668, 271]  # "<think>", "\n\n", "</think>", "\n\n"


def test_generation_stops_at_either_eos(models, qwen_tok):
    """The real generation config lists <|im_end|> and <|endoftext|>: both end a completion."""
    import torch
    from transformers import AutoModelForCausalLM

    from sparse2dense.generation import SamplingParams, generate

    model = AutoModelForCausalLM.from_pretrained(models["qwen3"], dtype=torch.float32)
    assert model.generation_config.eos_token_id == [151645, 151643]
    model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())  # untie
    prompt = render_prompt(qwen_tok, "What is $1+1$?", TEMPLATE, NO_THINKING)
    ids = torch.tensor([encode_prompt(qwen_tok, prompt)])
    hidden = model(ids, output_hidden_states=True).hidden_states[-1][0, -1]
    for stop in (151643, 151645):
        with torch.no_grad():  # the greedy first token is `stop`, whatever the random weights say
            model.lm_head.weight.zero_()
            model.lm_head.weight[stop] = 50 * hidden / hidden.norm()
        (completion,) = generate(
            model, qwen_tok, [prompt], SamplingParams(temperature=0.0, max_new_tokens=5)
        )[0]
        assert completion.token_ids == [stop] and completion.finish_reason == "stop"
        assert completion.text == ""


def test_preflight_on_real_tokenizers(qwen_tok):
    from sparse2dense.preflight import TokenizerMismatch, check_configured_models, compare_tokenizers
    from sparse2dense.sections import ModelSpec

    assert compare_tokenizers(qwen_tok, qwen_tok) == []
    qwen = ModelSpec(name_or_path=str(QWEN3))
    check_configured_models(qwen, qwen)  # the Qwen3 presets' pair: one tokenizer
    bos = bos_tokenizer()
    problems = compare_tokenizers(qwen_tok, bos)
    assert any("vocabulary size" in p for p in problems) and any("eos_token_id" in p for p in problems)
    assert any("chat templates differ" in p for p in problems)
    with pytest.raises(TokenizerMismatch, match="teacher and student tokenizers differ"):
        check_configured_models(qwen, ModelSpec(name_or_path=str(BOS_TOKENIZER)))


@pytest.mark.parametrize("family", ["qwen3", "bos_llama"])
def test_grpo_trainer_sees_the_eval_prompt_ids(models, tmp_path, family):
    """GRPO gets conversations and renders them with our chat kwargs: the ids eval and rollouts use,
    with exactly one BOS where the tokenizer adds one (a rendered string would get a second)."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import GRPOTrainer

    from sparse2dense.grading import correctness_reward
    from sparse2dense.stages.grpo import build_grpo_config

    tok = _tokenizer(models[family])
    kwargs = NO_THINKING if family == "qwen3" else {}
    section = GRPOSection(steps=2, prompts_per_step=2, num_generations=2, max_completion_length=8)
    spec = _spec(Stage.TEACHER_RL, tmp_path, "grpo", section, kwargs)
    args = build_grpo_config(section, spec, tmp_path, CPU)
    conversations = prompt_conversations(PROBLEMS, spec.inputs.prompt)
    trainer = GRPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(models[family]),
        reward_funcs=correctness_reward,
        args=args,
        train_dataset=Dataset.from_list([{"prompt": conversations[0], "answer": "2"}] * 2),
        processing_class=tok,
    )
    text = render_prompt(tok, PROBLEMS[0]["problem"], TEMPLATE, kwargs)
    ours = encode_prompt(tok, text)
    assert trainer._tokenize_prompts(conversations)[0] == [ours]
    if family == "bos_llama":
        assert ours[0] == tok.bos_token_id and ours.count(tok.bos_token_id) == 1
        # what a rendered string prompt got before: TRL adds special tokens to strings
        assert trainer._tokenize_prompts([text])[0][0][:2] == [tok.bos_token_id] * 2


@pytest.mark.parametrize("family", ["qwen3", "bos_llama"])
def test_distillation_trainer_sees_the_eval_prompt_ids(models, tmp_path, family):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import DistillationTrainer

    from sparse2dense.stages.opd import build_distillation_config

    tok = _tokenizer(models[family])
    kwargs = NO_THINKING if family == "qwen3" else {}
    section = OPDSection(steps=2, prompts_per_step=2, max_completion_length=8)
    spec = _spec(Stage.OPD, tmp_path, "opd", section, kwargs)
    conversations = prompt_conversations(PROBLEMS, spec.inputs.prompt)
    trainer = DistillationTrainer(
        model=AutoModelForCausalLM.from_pretrained(models[family]),
        teacher_model=AutoModelForCausalLM.from_pretrained(models[family]),
        args=build_distillation_config(section, spec, tmp_path, CPU),
        train_dataset=Dataset.from_list([{"prompt": conversations[0]}] * 2),
        processing_class=tok,
    )
    ours = encode_prompt(tok, render_prompt(tok, PROBLEMS[0]["problem"], TEMPLATE, kwargs))
    assert trainer._tokenize_prompts(conversations)[0] == [ours]


@pytest.mark.parametrize("family", ["qwen3", "bos_llama"])
@pytest.mark.parametrize("objective", ["forward_kl", "sft"])
def test_warmup_data_keeps_the_rollout_ids_and_masks_the_prompt(models, tmp_path, objective, family):
    """The warmup trains on exactly the teacher's sampled ids after exactly the rollout's prompt ids,
    with the loss on the completion only."""
    from transformers import AutoModelForCausalLM

    from sparse2dense.stages.warmup import build_trainer, build_warmup_config

    tok = _tokenizer(models[family])
    kwargs = NO_THINKING if family == "qwen3" else {}
    prompt = render_prompt(tok, PROBLEMS[0]["problem"], TEMPLATE, kwargs)
    prompt_ids = encode_prompt(tok, prompt)
    completion_ids = tok("The sum is \\boxed{2}.", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    rows = [{"prompt": prompt, "prompt_ids": prompt_ids, "completion_ids": completion_ids}] * 2
    section = WarmupSection(objective=objective, batch_size=2, max_length=256)
    spec = _spec(Stage.WARMUP, tmp_path, "warmup", section, kwargs)
    model = AutoModelForCausalLM.from_pretrained(models[family])
    args = build_warmup_config(section, spec, tmp_path, len(rows), CPU)
    trainer = build_trainer(section, spec, tmp_path, model, model, tok, rows, args)
    if objective == "sft":
        batch = trainer.data_collator([trainer.train_dataset[0]])
        ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
        assert ids == prompt_ids + completion_ids
        assert labels == [-100] * len(prompt_ids) + completion_ids
        return
    # forward KL: the batch TRL's distillation loss reads, in place of the student's own samples.
    batch = trainer._generate_and_score_completions([trainer.train_dataset[0]])
    assert batch["prompt_ids"][0].tolist() == prompt_ids and batch["prompt_mask"][0].all()
    assert batch["completion_ids"][0].tolist() == completion_ids
    assert batch["completion_mask"][0].tolist() == [1] * len(completion_ids)


def _fraction_changed(before: Path, after: Path) -> float:
    from safetensors.torch import load_file

    old, new = load_file(before / "model.safetensors"), load_file(after / "model.safetensors")
    changed = sum(int((new[k].float() != old[k].float()).sum()) for k in old)
    return changed / sum(t.numel() for t in old.values())


def test_bf16_student_keeps_fp32_master_weights(models, tmp_path):
    """At lr 1e-6 AdamW's step (~1e-6 per weight) is below bf16's resolution at the weights' scale:
    on bf16 weights ~2% of them change; on fp32 master copies (bf16 autocast) nearly all do."""
    from sparse2dense.models import load_model, load_tokenizer
    from sparse2dense.sections import ModelSpec
    from sparse2dense.stages.warmup import build_trainer, build_warmup_config

    tok_spec = StageSpec(
        stage=Stage.WARMUP,
        name="warmup",
        key="k",
        config={
            "warmup": {},
            "models": {
                "student": ModelSpec(name_or_path=str(models["qwen3"]), dtype="bfloat16").model_dump()
            },
        },
        semantic_config={},
        output_dir=str(tmp_path),
        seed=0,
    )
    tokenizer = load_tokenizer(tok_spec, "student")
    student = load_model(tok_spec, "student", trainable=True)
    teacher = load_model(tok_spec, "student")
    assert (
        next(student.parameters()).dtype.is_floating_point
        and str(next(student.parameters()).dtype) == "torch.float32"
    )
    assert str(next(teacher.parameters()).dtype) == "torch.bfloat16" and not any(
        p.requires_grad for p in teacher.parameters()
    )
    prompt = render_prompt(tokenizer, PROBLEMS[0]["problem"], TEMPLATE, NO_THINKING)
    completion = tokenizer("The sum is \\boxed{2}.", add_special_tokens=False)["input_ids"] + [151645]
    rows = [
        {"prompt": prompt, "prompt_ids": encode_prompt(tokenizer, prompt), "completion_ids": completion}
    ] * 6
    section = WarmupSection(learning_rate=1e-6, batch_size=2, max_length=256, memory={"bf16": True})
    args = build_warmup_config(section, tok_spec, tmp_path, len(rows), CPU)
    assert args.bf16 and args.max_steps == 3
    trainer = build_trainer(section, tok_spec, tmp_path, student, teacher, tokenizer, rows, args)
    trainer.train()
    trainer.model.save_pretrained(tmp_path / "after", safe_serialization=True)
    assert _fraction_changed(models["qwen3"], tmp_path / "after") > 0.9


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "data").is_dir(), reason="../shared/data not found")
def test_every_stage_of_the_qwen3_preset_runs_on_real_vocabulary(tmp_path):
    """The canonical GPU preset, its memory plans left to the hardware and its sizes cut down, runs
    every stage program once on tiny real-vocabulary Qwen3 models (GRPO with 4 updates per rollout
    batch, the replay control, forward-KL warmup, OPD, eval)."""
    from sparse2dense.config import load_config
    from sparse2dense.data import load_records
    from sparse2dense.store import read_manifest, verify_stage_dir

    teacher = save_qwen3(tmp_path / "teacher", layers=2, hidden=64, seed=1, dtype="float32")
    student = save_qwen3(tmp_path / "student", layers=1, hidden=32, seed=2, dtype="float32")
    overrides = tiny_preset_overrides(tiny_data_dir(tmp_path / "data"), teacher, student, tokens=8)
    cfg = load_config(Path(__file__).parents[1] / "configs" / "qwen3-8b-to-1.7b.yaml", overrides)
    runner = run_preset_stages(cfg, tmp_path / "store")
    out = Path(runner.results["eval/student_final"].path)
    for name, result in runner.results.items():
        assert verify_stage_dir(Path(result.path)) is None, name
    data = Path(runner.results["data_prep"].path)
    stage1 = load_records(data / "splits/stage1.jsonl")
    heldout = load_records(data / "splits/heldout.jsonl")
    assert read_manifest(Path(runner.results["teacher_rl"].path))["labeled_examples"] == min(8, len(stage1))
    assert read_manifest(Path(runner.results["student_rl"].path))["labeled_examples"] == 0  # replay
    from sparse2dense.stages.grpo import labeled_records

    assert len(labeled_records(data / "splits", "replay", cfg.seed)) == len(heldout)
    tok = _tokenizer(teacher)
    for row in load_records(Path(runner.results["teacher_rollouts"].path) / "rollouts/train.jsonl"):
        assert row["prompt_ids"] == encode_prompt(tok, row["prompt"])
        assert row["prompt"].endswith("<think>\n\n</think>\n\n")
    assert (out / "results.json").is_file()
    assert (Path(runner.results["opd"].path) / "model" / "model.safetensors").is_file()
