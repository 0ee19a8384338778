"""SmolLM2-135M-Instruct, the real CPU model: its tokenizer and weights through the prompt, generation,
trainer and pre-flight paths of the pipeline.

Its ChatML template writes `<|im_start|>` (the BOS) itself and inserts a default system prompt when a
conversation has none, and its pad token is its EOS `<|im_end|>`. Checked: eval, rollouts and TRL's
GRPO and distillation trainers feed the model the same prompt ids (one BOS, one system prompt);
greedy generation stops at `<|im_end|>` and counts a cut-off completion as truncated, in eval's
results too; the warmup's sequences end in one `<|im_end|>` that is trained on (a collator masking
pad ids would mask it, and the student would never learn to stop); the pre-flight on the real pair.
"""

import functools
import json
from pathlib import Path

import pytest

from sparse2dense.generation import SamplingParams, generate
from sparse2dense.graph import PromptFormat
from sparse2dense.launch import DeviceFacts
from sparse2dense.prompts import encode_prompt, prompt_conversations, render_prompts
from sparse2dense.sections import GRPOSection, ModelSpec, OPDSection, PruneSpec, WarmupSection
from sparse2dense.spec import StageSpec
from sparse2dense.stages import Stage
from sparse2dense.store import StageResult

TEMPLATE = "{problem}\nPut the final answer in \\boxed{}."  # configs/smollm2-cpu.yaml
PROMPT = PromptFormat(template=TEMPLATE, answer_format="stated")
SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
IM_START, IM_END = 1, 2
CPU = DeviceFacts(cuda=False, bf16_supported=False)
# Greedy, 12 new tokens: the first ends in 8 tokens, the second is cut off (it needs about 38).
PROBLEMS = [
    {"id": "short", "problem": "What is 2 + 3?", "answer": "5"},
    {
        "id": "long",
        "problem": "Tom has 3 apples and buys 4 more. How many apples does he have?",
        "answer": "7",
    },
]
GREEDY = SamplingParams(temperature=0.0, max_new_tokens=12)


def _spec(stage: Stage, out: Path, section_name: str, section, models=None, upstream=None) -> StageSpec:
    config = {section_name: section.model_dump(mode="json"), "models": models or {}}
    if section_name != "warmup":
        config["prompt"] = PROMPT.model_dump(mode="json")
    return StageSpec(
        stage=stage,
        name=str(stage),
        key="k",
        config=config,
        semantic_config={},
        upstream=upstream or {},
        output_dir=str(out),
        seed=0,
    )


@pytest.fixture(scope="module")
def tok(smollm2_model):
    """The tokenizer as the stage programs load it."""
    from sparse2dense.models import load_tokenizer
    from sparse2dense.sections import EvalSection

    models = {"model": {"name_or_path": str(smollm2_model)}}
    return load_tokenizer(_spec(Stage.EVAL, smollm2_model, "eval", EvalSection(), models), "model")


@pytest.fixture(scope="module")
def model(smollm2_model):
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(smollm2_model, dtype=torch.float32)


@pytest.fixture(scope="module")
def rollouts(model, tok):
    """Teacher-rollout rows of PROBLEMS (the rollout stage's shard function on the real model), and
    the unpadded prompt ids `generate` fed the model."""
    from sparse2dense.stages.teacher_rollouts import sample_shard

    fed: list[list[int]] = []
    original = model.generate

    def spy(**kwargs):
        for ids, mask in zip(kwargs["input_ids"].tolist(), kwargs["attention_mask"].tolist(), strict=True):
            fed.append([t for t, m in zip(ids, mask, strict=True) if m])
        return original(**kwargs)

    model.generate = spy
    try:
        generator = functools.partial(generate, model, tok)
        shard = list(zip(PROBLEMS, render_prompts(tok, PROBLEMS, PROMPT), strict=True))
        rows = sample_shard(lambda p, s, label: generator(p, s, label=label), tok, GREEDY, 0, shard)
    finally:
        del model.generate
    return rows, fed


@pytest.fixture(scope="module")
def trainers(model, tok, tmp_path_factory):
    """TRL's GRPO and distillation trainers built by our config builders on the real model."""
    from datasets import Dataset
    from trl import DistillationTrainer, GRPOTrainer

    from sparse2dense.grading import REWARDS
    from sparse2dense.stages.grpo import build_grpo_config
    from sparse2dense.stages.opd import build_distillation_config

    out = tmp_path_factory.mktemp("smollm2-trainers")
    conversations = prompt_conversations(PROBLEMS, PROMPT)
    grpo = GRPOSection(steps=1, prompts_per_step=2, num_generations=2, max_completion_length=8)
    grpo_spec = _spec(Stage.TEACHER_RL, out, "grpo", grpo)
    opd = OPDSection(steps=1, prompts_per_step=2, max_completion_length=8)
    return {
        "grpo": GRPOTrainer(
            model=model,
            reward_funcs=REWARDS[PROMPT.answer_format],
            args=build_grpo_config(grpo, grpo_spec, out / "grpo", CPU),
            train_dataset=Dataset.from_list([{"prompt": c, "answer": "5"} for c in conversations]),
            processing_class=tok,
        ),
        "opd": DistillationTrainer(
            model=model,
            teacher_model=model,
            args=build_distillation_config(opd, _spec(Stage.OPD, out, "opd", opd), out / "opd", CPU),
            train_dataset=Dataset.from_list([{"prompt": c} for c in conversations]),
            processing_class=tok,
        ),
    }


def test_tokenizer_facts(tok, model):
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<|im_start|>", "<|im_end|>", "<|im_end|>")
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (IM_START, IM_END, IM_END)
    assert len(tok) == 49152 and model.config.vocab_size == 49152
    assert tok("Hello")["input_ids"] == [19556]  # no BOS added: the template writes it
    assert model.generation_config.eos_token_id == IM_END


def test_every_path_feeds_the_same_prompt_ids(tok, rollouts, trainers):
    """Eval and rollouts (what `generate` feeds the model; vLLM gets `encode_prompt`'s ids), GRPO and
    distillation: one set of ids, one `<|im_start|>` at the front and the default system prompt once."""
    texts = render_prompts(tok, PROBLEMS, PROMPT)
    ours = [encode_prompt(tok, t) for t in texts]
    conversations = prompt_conversations(PROBLEMS, PROMPT)
    assert trainers["grpo"]._tokenize_prompts(conversations)[0] == ours
    assert trainers["opd"]._tokenize_prompts(conversations)[0] == ours
    rows, fed = rollouts
    assert fed == ours
    assert [r["prompt_ids"] for r in rows] == ours
    for text, ids in zip(texts, ours, strict=True):
        assert text.startswith(f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n")
        assert text.endswith("<|im_end|>\n<|im_start|>assistant\n")
        assert ids[0] == IM_START and ids[1] != IM_START
        assert ids.count(IM_START) == 3 and ids.count(IM_END) == 2  # system, user, assistant turns
        assert tok.decode(ids).count(SYSTEM) == 1
    # what a rendered string prompt would get from TRL, which tokenizes strings with special tokens:
    # no second BOS either, as this tokenizer adds none.
    assert trainers["grpo"]._tokenize_prompts(texts)[0] == ours


def test_trainers_pad_and_stop_with_im_end(trainers):
    for name, trainer in trainers.items():
        assert trainer.processing_class.pad_token_id == IM_END, name
        assert trainer.eos_token_ids == [IM_END], name
        config = trainer.generation_config
        assert (config.pad_token_id, config.eos_token_id, config.bos_token_id) == (IM_END, [IM_END], IM_START)


def test_generation_stops_at_im_end_and_counts_truncation(tok, rollouts):
    rows, _ = rollouts
    short, long = rows
    assert short["finish_reason"] == "stop"
    assert short["completion_ids"][-1] == IM_END and short["completion_ids"].count(IM_END) == 1
    assert "<|im_end|>" not in short["completion"] and "5" in short["completion"]
    assert short["completion"] == tok.decode(short["completion_ids"][:-1])
    assert long["finish_reason"] == "length"
    assert len(long["completion_ids"]) == GREEDY.max_new_tokens and IM_END not in long["completion_ids"]


@pytest.mark.parametrize("objective", ["sft", "forward_kl"])
def test_warmup_trains_on_the_final_im_end(model, tok, rollouts, tmp_path, objective):
    """Pad id == EOS id: the warmup batch must still put the completion's `<|im_end|>` in the loss
    and leave only the padding out."""
    from sparse2dense.stages.warmup import build_trainer, build_warmup_config

    rows, _ = rollouts
    section = WarmupSection(objective=objective, batch_size=2, max_length=256)
    spec = _spec(Stage.WARMUP, tmp_path, "warmup", section)
    args = build_warmup_config(section, spec, tmp_path, len(rows), CPU)
    trainer = build_trainer(section, spec, tmp_path, model, model, tok, rows, args)
    examples = [trainer.train_dataset[i] for i in range(len(rows))]
    if objective == "sft":
        batch = trainer.data_collator(examples)
        ids_B_T, labels_B_T = batch["input_ids"], batch["labels"]
        assert (labels_B_T == ids_B_T.where(labels_B_T != -100, -100)).all()  # labels: ids, not shifted
        loss_B_T = (labels_B_T != -100).int().tolist()
        wanted = [r["prompt_ids"] + r["completion_ids"] for r in rows]
        wanted_loss = [[0] * len(r["prompt_ids"]) + [1] * len(r["completion_ids"]) for r in rows]
    else:
        batch = trainer._generate_and_score_completions(examples)
        ids_B_T, loss_B_T = batch["completion_ids"], batch["completion_mask"].tolist()
        wanted = [r["completion_ids"] for r in rows]
        wanted_loss = [[1] * len(r["completion_ids"]) for r in rows]
    ids_B_T = ids_B_T.tolist()
    for ids, loss, sequence, sequence_loss in zip(ids_B_T, loss_B_T, wanted, wanted_loss, strict=True):
        assert ids[: len(sequence)] == sequence
        assert loss == sequence_loss + [0] * (len(loss) - len(sequence))  # padding: out of the loss
    # The finished completion ends in one <|im_end|>, in the loss; the pad after it has the same id.
    ids, loss, n = ids_B_T[0], loss_B_T[0], len(wanted[0])
    assert ids[n - 1] == IM_END != ids[n - 2] and loss[n - 1] == 1
    assert ids[n] == IM_END and loss[n] == 0


def test_eval_results_count_truncated_samples(smollm2_model, model, tmp_path, monkeypatch):
    from sparse2dense import models as loading
    from sparse2dense.data import save_records
    from sparse2dense.sections import EvalSection
    from sparse2dense.stages.eval import run_eval

    data = tmp_path / "data"
    save_records(data / "eval" / "words.jsonl", PROBLEMS)
    upstream = {
        "data": StageResult(stage="data_prep", name="data", key="d", path=str(data), manifest_digest="x")
    }
    section = EvalSection(
        samples_per_problem=1, temperature=0.0, max_new_tokens=GREEDY.max_new_tokens, backend="transformers"
    )
    models = {"model": {"name_or_path": str(smollm2_model)}}
    out = tmp_path / "eval"
    monkeypatch.setattr(loading, "load_model", lambda spec, role: model)  # the same weights, loaded once
    output = run_eval(_spec(Stage.EVAL, out, "eval", section, models, upstream), out)
    summary = json.loads((out / "results.json").read_text())["benchmarks"]["words"]
    assert summary["truncation_ratio"] == 0.5 and output.metrics["words/truncation_ratio"] == 0.5
    records = [json.loads(line) for line in (out / "records" / "words.jsonl").read_text().splitlines()]
    assert [r["samples"][0]["finish_reason"] for r in records] == ["stop", "length"]
    assert records[1]["samples"][0]["num_tokens"] == GREEDY.max_new_tokens


def test_preflight_accepts_the_pruned_pair(smollm2_gguf, smollm2_model):
    """One GGUF file for teacher and (pruned) student; the tokenizer the pre-flight reads from the
    GGUF is the one every stage reads from the converted folder."""
    from transformers import AutoTokenizer

    from sparse2dense.preflight import check_configured_models, compare_tokenizers

    gguf = str(smollm2_gguf)
    check_configured_models(
        ModelSpec(name_or_path=gguf), ModelSpec(name_or_path=gguf, prune=PruneSpec(num_hidden_layers=24))
    )
    from_gguf = AutoTokenizer.from_pretrained(str(smollm2_gguf.parent), gguf_file=smollm2_gguf.name)
    assert compare_tokenizers(from_gguf, AutoTokenizer.from_pretrained(smollm2_model)) == []


def test_preflight_refuses_smollm2_with_qwen3_before_loading_weights(smollm2_gguf, monkeypatch):
    from tests.tiny_models import QWEN3

    if not (QWEN3 / "tokenizer.json").is_file():
        pytest.skip("../shared/tokenizers not found")
    import transformers

    from sparse2dense.preflight import TokenizerMismatch, check_configured_models

    def no_weights(*args, **kwargs):
        raise AssertionError("the pre-flight loaded a model")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_weights)
    with pytest.raises(TokenizerMismatch, match="teacher and student tokenizers differ") as err:
        check_configured_models(ModelSpec(name_or_path=str(smollm2_gguf)), ModelSpec(name_or_path=str(QWEN3)))
    message = str(err.value)
    for named in (
        "vocabulary size (with added tokens): teacher 49152, student 151669",
        "eos_token_id",
        "chat templates differ",
    ):
        assert named in message
