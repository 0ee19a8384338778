"""The embedded toy world: the paper's setting in miniature, on CPU, with no network.

Problems are sums of `min_terms`..`max_terms` operands in [0, max_operand], solved by worked partial sums
ending in `\\boxed{}`; a character-level tokenizer and tiny Qwen3-architecture models are built
locally. The world is built so that the sparse-to-dense principle (PAPER.md, C1/C2) follows from
its structure, not from how training happens to go on one machine:

- A systematic error that sparse reward fixes: `base_noise` (half, in configs/toy.yaml) of the
  pre-training solutions stop one step early and box the partial sum before the last term. Both
  models learn it as a coin flip at the last step. A coin at 50% is a property of the data, not of
  the optimisation: it is the same on every seed and CPU. GRPO removes it wherever a policy solves
  a problem sometimes, which doubles accuracy there.
- A capacity gap with a hard part only the teacher can explore: the teacher is larger and its
  pre-training text holds every length; the student's holds sums of at most
  `base.student_max_terms` terms. On the longer sums the student gets ~0% (it has never continued
  a chain that far), so its GRPO groups there are all-wrong: zero reward variance, no gradient. The
  teacher solves them half the time and learns from them. Dense supervision (teacher samples, then
  the teacher's per-token distribution on the student's own samples) is what teaches the student
  the long sums.
- Scarce labels beside plentiful unlabeled prompts: the labeled pool is small, the unlabeled pool
  (the bridge's prompts) is four times larger. A sweep can cut the stage-1 budget
  (`teacher_rl.max_labels`), and the bridge can read the stage-1 problems too
  (`data.bridge_reads_stage1`), as in the paper.

What follows, arm by arm, is structural: GRPO on the student removes the stop-early coin on the
sums it knows but cannot reach the long ones; the raw teacher's bridge teaches the long sums but
hands the coin over with them; only the RL'd teacher's bridge gives both. The README's "The paper
in miniature" gives the measured table.

Everything is deterministic given a seed. Problems are split by a hash of the operands, so a sum
never appears in two splits. The chat template mirrors Qwen's (im_start/im_end), so the real
pipeline (chat rendering, EOS handling, TRL trainers) runs unchanged on it.
"""

from __future__ import annotations

import hashlib
import random
import string
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

from sparse2dense.sections import ToyArchitecture, ToyTask

PAD, BOS, EOS = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPLITS = ("base", "labeled", "unlabeled", "test")


def build_tokenizer() -> PreTrainedTokenizerFast:
    """One token per printable ASCII character plus three special tokens."""
    alphabet = [c for c in string.printable if c not in "\x0b\x0c\r"]
    vocab = {tok: i for i, tok in enumerate([PAD, BOS, EOS, *alphabet])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=PAD))
    core.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    core.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=PAD,
        eos_token=EOS,
        bos_token=None,
        unk_token=PAD,
        padding_side="left",
    )
    tok.add_special_tokens({"additional_special_tokens": [BOS]})
    tok.chat_template = CHAT_TEMPLATE
    return tok


def build_model(arch: ToyArchitecture, tokenizer: PreTrainedTokenizerFast, seed: int) -> Qwen3ForCausalLM:
    import torch

    torch.manual_seed(seed)
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=arch.hidden_size,
        intermediate_size=arch.intermediate_size,
        num_hidden_layers=arch.num_hidden_layers,
        num_attention_heads=arch.num_attention_heads,
        num_key_value_heads=arch.num_key_value_heads,
        head_dim=arch.hidden_size // arch.num_attention_heads,
        max_position_embeddings=arch.max_position_embeddings,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    model = Qwen3ForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def _split_of(terms: tuple[int, ...], seed: int, weights: list[int]) -> int:
    digest = hashlib.sha256(f"{seed}:{terms}".encode()).digest()
    bucket = int.from_bytes(digest[:8], "big") % sum(weights)
    for index, weight in enumerate(weights):
        if bucket < weight:
            return index
        bucket -= weight
    raise AssertionError("unreachable")


def worked_solution(terms: tuple[int, ...], stop_early: bool = False) -> str:
    """`12+7=19. 19+25=44. \\boxed{44}`: one partial sum per step. `stop_early` is the systematic
    error of the pre-training text: the last addition is skipped and the previous partial sum boxed."""
    used = terms[:-1] if stop_early else terms
    steps, total = [], used[0]
    for term in used[1:]:
        steps.append(f"{total}+{term}={total + term}.")
        total += term
    return " ".join([*steps, f"\\boxed{{{total}}}"])


def difficulty_of(problem: str) -> int:
    """The number of terms of a toy problem (`12+7+25=?` -> 3): its difficulty."""
    return problem.count("+") + 1


def generate_task(task: ToyTask, seed: int) -> dict[str, list[dict]]:
    """Disjoint splits of distinct problems: base (pre-training), labeled, unlabeled, test.

    Every split draws the number of terms uniformly from [min_terms, max_terms], so each holds the
    same spread of difficulty.
    """
    wanted = [task.num_base, task.num_labeled, task.num_unlabeled, task.num_test]
    per_level = sum(wanted) / (task.max_terms - task.min_terms + 1)
    if per_level * 2 > (task.max_operand + 1) ** task.min_terms:
        raise ValueError(
            f"toy task too small: about {per_level:.0f} problems of {task.min_terms} terms requested "
            f"from {(task.max_operand + 1) ** task.min_terms} possible; raise data.toy.max_operand or "
            "min_terms, or ask for fewer problems"
        )
    rng = random.Random(seed)
    splits: dict[str, list[dict]] = {name: [] for name in SPLITS}
    seen: set[tuple[int, ...]] = set()
    while any(len(splits[n]) < w for n, w in zip(SPLITS, wanted, strict=True)):
        size = rng.randint(task.min_terms, task.max_terms)
        terms = tuple(rng.randint(0, task.max_operand) for _ in range(size))
        if terms in seen:
            continue
        seen.add(terms)
        name = SPLITS[_split_of(terms, seed, wanted)]
        if len(splits[name]) >= wanted[SPLITS.index(name)]:
            continue
        # Pre-training text with a systematic error: some worked solutions stop one step early.
        # Sparse reward can remove it wherever a policy sometimes gets the whole sum right.
        stop_early = name == "base" and rng.random() < task.base_noise
        splits[name].append(
            {
                "id": f"toy-{name}-{len(splits[name])}",
                "problem": "+".join(map(str, terms)) + "=?",
                "answer": str(sum(terms)),
                "solution": worked_solution(terms, stop_early),
                "source": "toy",
                "metadata": {"terms": list(terms), "difficulty": size},
            }
        )
    return splits


def save_tokenizer(path: Path) -> PreTrainedTokenizerFast:
    tok = build_tokenizer()
    tok.save_pretrained(path)
    return tok
