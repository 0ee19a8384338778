"""Peak memory of the distillation stages' vocabulary-sized work, at Qwen3's vocabulary (151,936).

Three components, each at T = 512, 2,048 and 8,192 tokens (batch 1; a 32-token prompt, the rest
completion), with tiny random Qwen3 models built from the real Qwen3-1.7B config (2 layers; teacher
hidden 128, student hidden 64): (a) the warmup loss and (b) the OPD loss, forward + backward
through the trainers' own `compute_loss`, and (c) the divergence diagnostics. Every measurement runs
in a fresh subprocess: peak RSS on CPU, peak allocated CUDA memory with `--device cuda`.

`model` is the models' own share: the same process (libraries, trainer built) making the same
backbone calls without anything vocabulary-sized (no lm_head, no logits): the teacher's backbone
without gradient and, for the losses, the student's backbone with a backward of its summed hidden
states. `excess` = peak - model at the same T; the
acceptance is excess(8192) / excess(2048) <= 1.5. `--baseline` adds today's main code: GKDTrainer's
loss for the warmup, main's diagnostics (a copy below), and for OPD the same DistillationTrainer
with TRL's default tile height (main used it unchanged).

    python benchmarks/memory_distillation.py [--baseline] [--device cpu|cuda] [--tokens 512 2048 8192]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QWEN3 = ROOT.parent / "shared" / "tokenizers" / "qwen3"
COMPONENTS = ("warmup", "opd", "diagnostics")
PROMPT = 32


# ---- main's diagnostics, kept verbatim as the baseline -----------------------------------------------


def main_measure_divergence(teacher, student, pairs, pad_id, batch_size=32):
    import torch

    from sparse2dense.diagnostics import _batch
    from sparse2dense.losses import compute_forward_kl, compute_implicit_reward, compute_reverse_kl

    with torch.no_grad():
        teacher.eval()
        student.eval()
        totals = {"forward_kl": 0.0, "reverse_kl": 0.0, "implicit_reward_mean": 0.0}
        tokens = 0
        for start in range(0, len(pairs), batch_size):
            ids, attn, target = _batch(pairs[start : start + batch_size], pad_id)
            t_logits = teacher(input_ids=ids, attention_mask=attn).logits[:, :-1]
            s_logits = student(input_ids=ids, attention_mask=attn).logits[:, :-1]
            mask, next_tokens = target[:, 1:], ids[:, 1:]
            n = int(mask.sum())
            totals["forward_kl"] += compute_forward_kl(t_logits, s_logits, mask).item() * n
            totals["reverse_kl"] += compute_reverse_kl(t_logits, s_logits, mask).item() * n
            mean, _ = compute_implicit_reward(t_logits, s_logits, next_tokens, mask)
            totals["implicit_reward_mean"] += mean.item() * n
            tokens += n
    return {k: v / tokens for k, v in totals.items()}


# ---- one measurement (runs in its own process) -------------------------------------------------------


def _models(device):
    import torch
    from transformers import AutoConfig, Qwen3Config, Qwen3ForCausalLM

    def build(hidden, seed):
        real = AutoConfig.from_pretrained(QWEN3).to_dict()
        shape = {"num_hidden_layers": 2, "hidden_size": hidden, "intermediate_size": 2 * hidden}
        heads = {
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": hidden // 4,
            "layer_types": None,
        }
        torch.manual_seed(seed)
        return Qwen3ForCausalLM(Qwen3Config.from_dict(real | shape | heads)).to(device, torch.float32)

    return build(128, 0), build(64, 1)


def _rows(tokens):
    import torch

    g = torch.Generator().manual_seed(tokens)
    ids = torch.randint(0, 151_000, (tokens,), generator=g).tolist()
    return [{"prompt_ids": ids[:PROMPT], "completion_ids": ids[PROMPT:]}]


def _trainer(kind, teacher, student, tokenizer, rows, out, device):
    from datasets import Dataset
    from trl import DistillationConfig
    from trl.experimental.gkd import GKDConfig, GKDTrainer
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from sparse2dense.stages.warmup import TeacherSequenceTrainer

    common = {
        "output_dir": out,
        "use_cpu": device == "cpu",
        "report_to": [],
        "per_device_train_batch_size": 1,
    }
    if kind == "gkd":
        data = Dataset.from_list(
            [
                {"input_ids": r["prompt_ids"] + r["completion_ids"], "labels": r["completion_ids"]}
                for r in rows
            ]
        )
        args = GKDConfig(**common, lmbda=0.0, beta=0.0, temperature=1.0, seq_kd=False, max_length=None)
        collator = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id)
        return GKDTrainer(
            model=student,
            teacher_model=teacher,
            args=args,
            data_collator=collator,
            train_dataset=data,
            processing_class=tokenizer,
        )
    beta = 0.0 if kind == "warmup" else 1.0
    args = DistillationConfig(
        **common, beta=beta, temperature=1.0, max_completion_length=len(rows[0]["completion_ids"])
    )
    return TeacherSequenceTrainer(
        model=student,
        teacher_model=teacher,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )


def measure(component: str, mode: str, tokens: int, device: str) -> float:
    """Peak MiB of one component in one mode at `tokens` tokens (this process's peak)."""
    import resource

    import torch
    from transformers import AutoTokenizer

    from sparse2dense.diagnostics import measure_divergence
    from sparse2dense.losses import bound_divergence_tiles

    tokenizer = AutoTokenizer.from_pretrained(QWEN3)
    teacher, student = _models(device)
    rows = _rows(tokens)
    ids = torch.tensor([rows[0]["prompt_ids"] + rows[0]["completion_ids"]], device=device)
    attn = torch.ones_like(ids)
    with tempfile.TemporaryDirectory() as out:
        trainer = None
        if component != "diagnostics":  # built in `model` mode too: same libraries, same process overhead
            if mode != "baseline":
                bound_divergence_tiles()
            kind = "gkd" if (component, mode) == ("warmup", "baseline") else component
            trainer = _trainer(kind, teacher, student, tokenizer, rows, out, device)
            student = trainer.model
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        if mode == "model":
            with torch.no_grad():
                teacher.model(input_ids=ids, attention_mask=attn)
                if component == "diagnostics":
                    student.model(input_ids=ids, attention_mask=attn)
            if component != "diagnostics":
                student.model(input_ids=ids, attention_mask=attn).last_hidden_state.sum().backward()
        elif component == "diagnostics":
            pairs = [(r["prompt_ids"], r["completion_ids"]) for r in rows]
            run = measure_divergence if mode == "new" else main_measure_divergence
            run(teacher, student, pairs, tokenizer.pad_token_id)
        elif trainer is not None and (component, mode) == ("warmup", "baseline"):
            batch = {"input_ids": ids, "attention_mask": attn, "labels": ids.clone()}
            batch["labels"][:, :PROMPT] = -100
            trainer.compute_loss(trainer.model, batch).backward()
        else:
            inputs = trainer._generate_and_score_completions(rows)
            trainer.compute_loss(trainer.model, inputs).backward()
        if device == "cuda":
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---- the table -------------------------------------------------------------------------------------------


def _run(component, mode, tokens, device, timeout):
    cmd = [sys.executable, __file__, "--worker", component, mode, str(tokens), "--device", device]
    env = dict(os.environ) | {"PYTHONPATH": str(ROOT), "TRL_EXPERIMENTAL_SILENCE": "1", "HF_HUB_OFFLINE": "1"}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        print(
            f"  {component}/{mode}/T={tokens} failed (rc {proc.returncode}): {proc.stderr[-300:]}",
            file=sys.stderr,
        )
        return None
    return json.loads(lines[-1])["peak_mib"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", action="store_true", help="also measure main's code")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--tokens", type=int, nargs="+", default=[512, 2048, 8192])
    parser.add_argument(
        "--baseline-tokens",
        type=int,
        nargs="+",
        help="T values for --baseline (default: --tokens); main's code needs ~45 GB of RAM at T=8192",
    )
    parser.add_argument("--components", nargs="+", choices=COMPONENTS, default=list(COMPONENTS))
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per measurement")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--worker", nargs=3, metavar=("COMPONENT", "MODE", "T"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        component, mode, tokens = args.worker
        print(json.dumps({"peak_mib": measure(component, mode, int(tokens), args.device)}), flush=True)
        return

    modes = ["model", "new"] + (["baseline"] if args.baseline else [])
    figures: dict[str, dict[str, dict[int, float | None]]] = {}
    for component in args.components:
        for mode in modes:
            for tokens in args.tokens:
                if mode == "baseline" and args.baseline_tokens and tokens not in args.baseline_tokens:
                    figures.setdefault(component, {}).setdefault(mode, {})[tokens] = None
                    continue
                peak = _run(component, mode, tokens, args.device, args.timeout)
                figures.setdefault(component, {}).setdefault(mode, {})[tokens] = peak
                print(
                    f"  {component:<11} {mode:<8} T={tokens:<5} peak {peak if peak is None else round(peak)} MiB",
                    flush=True,
                )

    unit = "peak RSS" if args.device == "cpu" else "peak CUDA allocated"
    print(f"\n{unit}, MiB (excess = peak - model at the same T; growth = excess 8192 / excess 2048)")
    header = f"{'component':<12}{'mode':<10}" + "".join(f"{'T=' + str(t):>10}" for t in args.tokens)
    print(header + f"{'excess 2048':>13}{'excess 8192':>13}{'growth':>8}")

    def cell(v):
        return f"{'n/a' if v is None else round(v):>10}"

    for component, by_mode in figures.items():
        for mode, peaks in by_mode.items():
            line = f"{component:<12}{mode:<10}" + "".join(cell(peaks.get(t)) for t in args.tokens)
            if mode != "model" and {2048, 8192} <= set(args.tokens):
                base = by_mode["model"]
                ex = [
                    None if peaks[t] is None or base[t] is None else peaks[t] - base[t] for t in (2048, 8192)
                ]
                growth = f"{ex[1] / ex[0]:.2f}" if None not in ex and ex[0] > 0 else "-"
                line += "".join(f"{'-' if e is None else round(e):>13}" for e in ex) + f"{growth:>8}"
            print(line)
    if args.json:
        args.json.write_text(json.dumps({"device": args.device, "unit": unit, "figures": figures}, indent=1))


if __name__ == "__main__":
    main()
