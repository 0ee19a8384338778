"""eval: k samples per problem on every eval set, graded by the same function as the RL reward.

Writes `records/<benchmark>.jsonl` (one line per problem: every sample's text, extracted answer,
verdict and reason) and `results.json` (avg@k +- stderr, pass@k, maj@k per benchmark, with the
generation backend, its version and every sampling parameter), and the first graded samples of each
benchmark to `samples.md` / `samples.jsonl` (`sample_preview`; the log shows a few as soon as a
benchmark's first shard is graded). Sampling and grading run in shards of
`batch_size` problems, shard i of a benchmark with seed + i, so a relaunched stage keeps its
finished shards.

    python -m sparse2dense.stages.eval SPEC.json
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path

from sparse2dense.data import load_records, save_records
from sparse2dense.generation import SamplingParams, backend_info, open_generator, resolve_backend
from sparse2dense.grading import Verdict, grade_output
from sparse2dense.graph import EvalInputs, Stage
from sparse2dense.metrics import summarize
from sparse2dense.models import load_tokenizer
from sparse2dense.prompts import render_prompts
from sparse2dense.sample_preview import FILE_SAMPLES, SampleLog, preview_rows, save_samples
from sparse2dense.spec import StageSpec
from sparse2dense.stages.program import ShardedGeneration, StageOutput, run_stage, shard_seed


def grade_group(problem: dict, group: list, answer_format: str = "boxed") -> dict:
    """One problem's record: every sample's text, extracted answer, verdict and reason."""
    grades = [grade_output(problem["answer"], c.text, answer_format) for c in group]
    difficulty = (problem.get("metadata") or {}).get("difficulty")
    return {
        "id": problem["id"],
        "answer": problem["answer"],
        **({"difficulty": difficulty} if difficulty is not None else {}),
        "samples": [
            {
                "text": c.text,
                "pred": g.pred,
                "verdict": str(g.verdict),
                "reason": g.reason,
                "finish_reason": c.finish_reason,
                "num_tokens": len(c.token_ids),
            }
            for c, g in zip(group, grades, strict=True)
        ],
    }


def accuracy_by_difficulty(rows: list[dict], correct_P_K: list[list[bool]]) -> dict[str, float]:
    """Mean accuracy per difficulty level (`acc_difficulty_<n>`) and the fraction of problems no
    sample solved (`unsolved_difficulty_<n>`), for benchmarks whose problems carry a difficulty."""
    levels: dict[int, list[float]] = {}
    for row, correct_K in zip(rows, correct_P_K, strict=True):
        if "difficulty" in row:
            levels.setdefault(int(row["difficulty"]), []).append(sum(correct_K) / len(correct_K))
    out = {}
    for level, accs in sorted(levels.items()):
        out[f"acc_difficulty_{level}"] = sum(accs) / len(accs)
        out[f"unsolved_difficulty_{level}"] = sum(a == 0 for a in accs) / len(accs)
    return out


def sample_and_grade(
    generator, sampling: SamplingParams, answer_format: str, label: str, index: int, shard: list
) -> list[dict]:
    """Records of one shard of (problem, prompt) pairs, sampled with the shard's own seed."""
    problems, prompts = [p for p, _ in shard], [t for _, t in shard]
    shard_sampling = dataclasses.replace(sampling, seed=shard_seed(sampling.seed, index))
    groups = generator(prompts, shard_sampling, label=f"{label} shard {index}")
    return [
        grade_group(problem, group, answer_format) for problem, group in zip(problems, groups, strict=True)
    ]


def run_eval(spec: StageSpec, out_dir: Path) -> StageOutput:
    inputs = spec.inputs_of(EvalInputs)
    section, prompt = inputs.eval, inputs.prompt
    backend = resolve_backend(section.backend)
    tokenizer = load_tokenizer(spec, "model")
    generator = open_generator(
        spec,
        "model",
        tokenizer,
        backend,
        batch_size=section.batch_size,
        tensor_parallel_size=section.vllm_tensor_parallel_size,
        gpu_memory_utilization=section.vllm_gpu_memory_utilization,
    )
    sampling = SamplingParams.from_section(section, n=section.samples_per_problem, seed=spec.seed)
    shards = ShardedGeneration(spec.name, str(spec.stage), out_dir)
    results, metrics, samples = {}, {}, []
    for path in sorted((spec.upstream_path("data") / "eval").glob("*.jsonl")):
        bench = path.stem
        problems = load_records(path)[: section.max_problems]
        prompts = render_prompts(tokenizer, problems, prompt)
        produce = functools.partial(
            sample_and_grade, generator, sampling, prompt.answer_format, f"eval {bench}"
        )
        texts = {p["id"]: p["problem"] for p in problems}
        shown = SampleLog(spec.name, bench, texts)
        items = list(zip(problems, prompts, strict=True))
        rows = shards.run(bench, items, section.batch_size, shown.showing(produce))
        shown.show(rows)  # when every shard was finished by an earlier run
        samples += preview_rows(bench, rows, texts, FILE_SAMPLES)
        save_records(out_dir / "records" / f"{bench}.jsonl", rows)
        correct_P_K = [[s["verdict"] == str(Verdict.CORRECT) for s in r["samples"]] for r in rows]
        answers_P_K = [[s["pred"] for s in r["samples"]] for r in rows]
        summary = summarize(correct_P_K, answers_P_K)
        lengths = [s["num_tokens"] for r in rows for s in r["samples"]]
        truncated = [s["finish_reason"] == "length" for r in rows for s in r["samples"]]
        summary["response_length_mean"] = sum(lengths) / max(len(lengths), 1)
        summary["truncation_ratio"] = sum(truncated) / max(len(truncated), 1)
        summary |= accuracy_by_difficulty(rows, correct_P_K)
        results[bench] = summary
        metrics |= {f"{bench}/{k}": v for k, v in summary.items()}
    payload = {
        "benchmarks": results,
        "sampling": sampling.as_dict(),
        "shards": {
            "size": section.batch_size,
            "seed": "sampling seed + shard index (vLLM: one seed per prompt from it, request_seeds)",
        },
        "generation": backend_info(backend),
    }
    (out_dir / "results.json").write_text(json.dumps(payload, indent=2))
    save_samples(out_dir, samples)
    return StageOutput(metrics=metrics)


def main() -> None:
    run_stage(Stage.EVAL, run_eval)


if __name__ == "__main__":
    main()
