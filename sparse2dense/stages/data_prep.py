"""data_prep: build the splits every later stage reads.

Writes `splits/{stage1,heldout,unlabeled}.jsonl` (labeled pool split for teacher RL / held-out
student RL; unlabeled prompts with answers stripped for the bridge), `splits/base.jsonl` (toy
pre-training solutions) and `eval/<name>.jsonl` (each cut to `eval_max_problems` where set). The
kind's preparer supplies them: the toy world, benchmark files, or generated word problems beside
benchmark eval sets. Every training split is decontaminated against every eval set (normalized
exact match, word n-gram overlap); `decontamination.json` lists each removal. Consumes no labels
itself; the ledger counts them where a stage trains on them.

    python -m sparse2dense.stages.data_prep SPEC.json
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from sparse2dense.data import WORDS_EVAL_SETS, load_benchmark, save_records, split_labeled, strip_labels
from sparse2dense.decontamination import EvalIndex, decontaminate, normalize_problem
from sparse2dense.graph import DataPrepInputs, Stage
from sparse2dense.sections import DataSection
from sparse2dense.spec import StageSpec
from sparse2dense.stages.program import StageOutput, run_stage
from sparse2dense.toy import generate_task
from sparse2dense.words import generate_words


def prepare_toy(section: DataSection, seed: int) -> dict[str, list]:
    splits = generate_task(section.toy, seed)
    stage1, heldout = split_labeled(splits["labeled"], section.heldout_fraction, seed)
    return {
        "base": splits["base"],
        "stage1": stage1,
        "heldout": heldout,
        "unlabeled": strip_labels(splits["unlabeled"]),
        "eval/toy_test": splits["test"],
    }


def prepare_math(section: DataSection, seed: int) -> dict[str, list]:
    if section.data_dir is None:
        raise ValueError("data.data_dir must be set for data.kind = 'math'")
    labeled = deduplicate(
        [r for src in section.labeled_sources for r in load_benchmark(src, section.data_dir)]
    )
    stage1, heldout = split_labeled(labeled, section.heldout_fraction, seed)
    unlabeled = [r for src in section.unlabeled_sources for r in load_benchmark(src, section.data_dir)]
    out = {"stage1": stage1, "heldout": heldout, "unlabeled": strip_labels(unlabeled)}
    for name in section.eval_sets:
        out[f"eval/{name}"] = load_benchmark(name, section.data_dir)
    return out


def prepare_words(section: DataSection, seed: int) -> dict[str, list]:
    """Generated word problems, and any benchmark eval set (e.g. gsm8k) read from data_dir."""
    splits = generate_words(section.words, seed)
    stage1, heldout = split_labeled(splits["labeled"], section.heldout_fraction, seed)
    out = {"stage1": stage1, "heldout": heldout, "unlabeled": strip_labels(splits["unlabeled"])}
    for name in section.eval_sets:
        if name in WORDS_EVAL_SETS:
            out[f"eval/{name}"] = splits["test"]
        elif section.data_dir is None:
            raise ValueError(f"data.data_dir must be set for eval set {name!r} of data.kind = 'words'")
        else:
            out[f"eval/{name}"] = load_benchmark(name, section.data_dir)
    return out


PREPARERS: dict[str, Callable[[DataSection, int], dict[str, list]]] = {
    "toy": prepare_toy,
    "math": prepare_math,
    "words": prepare_words,
}


def prepare(section: DataSection, seed: int) -> dict[str, list]:
    """The kind's splits and eval sets, each eval set cut to its first `eval_max_problems` problems;
    with `bridge_reads_stage1` the bridge's prompts start with the stage-1 problems, labels stripped."""
    prepared = PREPARERS[section.kind](section, seed)
    if section.bridge_reads_stage1:
        prepared["unlabeled"] = strip_labels(prepared["stage1"]) + prepared["unlabeled"]
    for name, limit in section.eval_max_problems.items():
        prepared[f"eval/{name}"] = prepared[f"eval/{name}"][:limit]
    return prepared


def decontaminate_splits(prepared: dict[str, list], ngram: int) -> tuple[dict[str, list], dict[str, list]]:
    """Remove from every training split the problems that match any eval problem."""
    index = EvalIndex((r for name, rs in prepared.items() if name.startswith("eval/") for r in rs), ngram)
    clean, report = {}, {}
    for name, records in prepared.items():
        if name.startswith("eval/"):
            clean[name] = records
        else:
            clean[name], report[name] = decontaminate(records, index)
    return clean, report


def deduplicate(records: list) -> list:
    seen, out = set(), []
    for record in records:
        key = normalize_problem(record["problem"])
        if key not in seen:
            seen.add(key)
            out.append(record)
    return out


def run_data_prep(spec: StageSpec, out_dir: Path) -> StageOutput:
    section = spec.inputs_of(DataPrepInputs).data
    prepared, removed = decontaminate_splits(prepare(section, spec.seed), section.decontamination_ngram)
    (out_dir / "decontamination.json").write_text(json.dumps(removed, indent=1))
    metrics = {f"decontaminated_{name}": float(len(rows)) for name, rows in removed.items()}
    for name, records in prepared.items():
        target = out_dir / (name if name.startswith("eval/") else f"splits/{name}")
        metrics[f"n_{name.replace('/', '_')}"] = float(save_records(target.with_suffix(".jsonl"), records))
    return StageOutput(metrics=metrics)


def main() -> None:
    run_stage(Stage.DATA_PREP, run_data_prep)


if __name__ == "__main__":
    main()
