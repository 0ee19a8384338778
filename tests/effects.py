"""Learning effects measured against their own standard errors, for the tests that assert learning.

A tiny model trained on a CPU takes another path on another CPU or thread count: sums in another
order change the samples it draws. So a test that asserts learning (accuracy or reward rising, a
KL falling) asserts a gain of at least `MARGIN` standard errors, with the error taken from the
run's own units (problems, steps, sequences), never a bare sign that noise can flip.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sparse2dense.statistics import paired_scores, problem_scores

# A gain this many standard errors from zero has odds of about 1 in 700 under pure noise.
MARGIN = 3.0


@dataclass(frozen=True)
class Effect:
    """A mean gain (positive: the objective moved the right way) and its standard error."""

    gain: float
    se: float
    n: int

    @property
    def margin(self) -> float:
        """The gain in standard errors (inf for a gain measured without spread)."""
        if self.se > 0:
            return self.gain / self.se
        return math.inf if self.gain > 0 else 0.0

    def __str__(self) -> str:
        return f"gain {self.gain:+.4f}, SE {self.se:.4f}, {self.margin:.1f} SE over {self.n} units"


def paired_gain(gains: Sequence[float], weights: Sequence[float] | None = None) -> Effect:
    """Mean of per-unit gains and its standard error; with `weights` (tokens per sequence) the
    weighted mean sum(w g)/sum(w) with the ratio estimator's error, units as the clusters."""
    n = len(gains)
    if n < 2:
        raise ValueError(f"a standard error needs at least 2 units, got {n}")
    w = list(weights) if weights is not None else [1.0] * n
    total = sum(w)
    mean = sum(wi * g for wi, g in zip(w, gains, strict=True)) / total
    spread = sum((wi * (g - mean)) ** 2 for wi, g in zip(w, gains, strict=True)) * n / (n - 1)
    return Effect(mean, math.sqrt(spread) / total, n)


def unpaired_gain(after: Sequence[float], before: Sequence[float]) -> Effect:
    """mean(after) - mean(before) with Welch's standard error (independent units, e.g. steps)."""

    def mean_var(xs: Sequence[float]) -> tuple[float, float]:
        m = sum(xs) / len(xs)
        return m, sum((x - m) ** 2 for x in xs) / (len(xs) - 1)

    (ma, va), (mb, vb) = mean_var(after), mean_var(before)
    return Effect(ma - mb, math.sqrt(va / len(after) + vb / len(before)), len(after) + len(before))


def interval_effect(gain: float, low: float, high: float, n: int, confidence: float = 0.95) -> Effect:
    """A gain whose standard error is read off its two-sided `confidence` interval (a bootstrap
    percentile interval of a mean is close to normal: its half-width is z standard errors)."""
    from scipy.stats import norm

    return Effect(gain, (high - low) / (2 * float(norm.ppf(0.5 + confidence / 2))), n)


def eval_gain(summary: dict, after: str, before: str, benchmark: str = "toy_test") -> Effect:
    """Paired per-problem accuracy gain of eval stage `after` over `before` (e.g. eval/teacher_rl
    over eval/teacher_base), read from their per-sample records."""

    def scores(stage: str) -> dict[str, float]:
        path = Path(summary["stages"][stage]["path"]) / "records" / f"{benchmark}.jsonl"
        return problem_scores(json.loads(line) for line in path.read_text().splitlines())

    a, b = paired_scores(scores(after), scores(before), f"{after} and {before}")
    return paired_gain([x - y for x, y in zip(a, b, strict=True)])


def metric_history(summary: dict, stage: str, key: str) -> list[float]:
    """A stage's logged training curve (one value per logging step) from its MLflow run."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(summary["mlflow"]["tracking_uri"])
    history = client.get_metric_history(summary["stages"][stage]["mlflow_run_id"], key)
    return [m.value for m in sorted(history, key=lambda m: (m.step, m.timestamp))]


def divergence_fall(teacher, before, after, pairs, pad_id: int, key: str) -> tuple[Effect, dict]:
    """How much KL `key` falls from student `before` to `after` against `teacher` on the same
    sequences: the token-weighted fall with sequences as the units, and both token means."""
    from sparse2dense.diagnostics import measure_divergence

    per = [
        (measure_divergence(teacher, before, [p], pad_id), measure_divergence(teacher, after, [p], pad_id))
        for p in pairs
    ]
    per = [(b, a) for b, a in per if b["tokens"] > 0]
    tokens = [b["tokens"] for b, _ in per]
    effect = paired_gain([b[key] - a[key] for b, a in per], tokens)
    means = {
        "before": sum(b[key] * t for (b, _), t in zip(per, tokens, strict=True)) / sum(tokens),
        "after": sum(a[key] * t for (_, a), t in zip(per, tokens, strict=True)) / sum(tokens),
    }
    return effect, means


def completion_nll(model, pairs) -> list[tuple[float, int]]:
    """Per sequence: the mean negative log-likelihood of its completion tokens, and their count."""
    import torch

    out = []
    model.eval()
    with torch.no_grad():
        for prompt, completion in pairs:
            ids = torch.tensor([prompt + completion])
            logp = model(input_ids=ids).logits[0, :-1].float().log_softmax(-1)  # [T-1, V]
            picked = logp.gather(-1, ids[0, 1:, None])[len(prompt) - 1 :, 0]  # the completion's tokens
            out.append((-picked.mean().item(), len(completion)))
    return out


def loss_fall(before, after, pairs) -> Effect:
    """How much the completion loss falls from model `before` to `after`, token-weighted, with
    sequences as the units."""
    nll_b, nll_a = completion_nll(before, pairs), completion_nll(after, pairs)
    return paired_gain([b - a for (b, _), (a, _) in zip(nll_b, nll_a, strict=True)], [n for _, n in nll_b])


def sampled_divergence_fall(teacher, before, after, tokenizer, prompts, sampling, key: str) -> Effect:
    """How much KL `key` falls on each student's own samples for the same prompts (as OPD
    measures it): per prompt, the KL on `after`'s sample minus that on `before`'s, paired by prompt."""
    from sparse2dense.diagnostics import measure_divergence
    from sparse2dense.generation import generate

    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]

    def per_prompt(student) -> list[float]:
        groups = generate(student, tokenizer, prompts, sampling, label="effect")
        pad = tokenizer.pad_token_id
        return [
            measure_divergence(teacher, student, [(i, g[0].token_ids)], pad)[key]
            for i, g in zip(ids, groups, strict=True)
        ]

    return paired_gain([b - a for b, a in zip(per_prompt(before), per_prompt(after), strict=True)])


# ---- the effects of a finished post-train run's stages, from its store --------------------------------


def _stage_dir(summary: dict, name: str) -> Path:
    return Path(summary["stages"][name]["path"])


def _trained(summary: dict, name: str):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(_stage_dir(summary, name) / "model").eval()


def pretraining_fall(summary: dict, name: str, sequences: int = 64) -> Effect:
    """Toy pre-training (`base/teacher`, `base/student`): the completion loss on the first
    `sequences` pre-training solutions, from the seeded initialisation to the trained model."""
    from sparse2dense.data import load_records
    from sparse2dense.graph import BaseInputs
    from sparse2dense.prompts import encode_prompt, render_prompts
    from sparse2dense.spec import load_spec
    from sparse2dense.stages.base import pretraining_text
    from sparse2dense.toy import build_model, build_tokenizer

    tokenizer = build_tokenizer()
    spec = load_spec(_stage_dir(summary, name) / "spec.json")
    inputs = spec.inputs_of(BaseInputs)
    records = load_records(_stage_dir(summary, "data_prep") / "splits" / "base.jsonl")
    records = pretraining_text(records, inputs.train)[:sequences]
    prompts = render_prompts(tokenizer, records, inputs.prompt)
    pairs = [
        (
            encode_prompt(tokenizer, p),
            tokenizer(r["solution"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id],
        )
        for p, r in zip(prompts, records, strict=True)
    ]
    initial = build_model(inputs.models["policy"].toy, tokenizer, spec.seed)
    return loss_fall(initial, _trained(summary, name), pairs)


def warmup_fall(summary: dict) -> tuple[Effect, dict]:
    """Warmup: the forward KL to the RL'd teacher on the held-out teacher rollouts (the sequences
    the stage measures), from the base student to the warmed-up one; and both token means."""
    from sparse2dense.data import load_records
    from sparse2dense.toy import build_tokenizer

    rows = load_records(_stage_dir(summary, "teacher_rollouts") / "rollouts" / "heldout.jsonl")
    pairs = [(r["prompt_ids"], r["completion_ids"]) for r in rows]
    teacher, before, after = (_trained(summary, n) for n in ("teacher_rl", "base/student", "warmup"))
    return divergence_fall(teacher, before, after, pairs, build_tokenizer().pad_token_id, "forward_kl")


def opd_fall(summary: dict, prompts: int = 64) -> Effect:
    """OPD: the reverse KL to the RL'd teacher on each student's own samples (as the stage measures
    it, with its sampling settings), for `prompts` unlabeled prompts, from the warmed-up student to
    the distilled one."""
    import random

    from sparse2dense.data import load_records
    from sparse2dense.generation import SamplingParams
    from sparse2dense.graph import OPDInputs
    from sparse2dense.prompts import render_prompts
    from sparse2dense.spec import load_spec
    from sparse2dense.toy import build_tokenizer

    tokenizer = build_tokenizer()
    spec = load_spec(_stage_dir(summary, "opd") / "spec.json")
    inputs = spec.inputs_of(OPDInputs)
    problems = load_records(_stage_dir(summary, "data_prep") / "splits" / "unlabeled.jsonl")
    rendered = render_prompts(tokenizer, problems, inputs.prompt)
    chosen = random.Random(spec.seed).sample(rendered, min(prompts, len(rendered)))
    sampling = SamplingParams(
        temperature=inputs.opd.temperature, max_new_tokens=inputs.opd.max_completion_length, seed=spec.seed
    )
    teacher, before, after = (_trained(summary, n) for n in ("teacher_rl", "warmup", "opd"))
    return sampled_divergence_fall(teacher, before, after, tokenizer, chosen, sampling, "reverse_kl")
