"""Word problems: deterministic, answers that follow from the stated events, a balanced spread of
difficulty, no text in two splits; data prep for kind words (with a GSM8K slice from the shared
data, skipped when it is absent); the config's checks; the grader on the answers' two forms.
"""

import json
import os
import re
from collections import Counter
from pathlib import Path

import pytest

from sparse2dense.config import ConfigError, load_config
from sparse2dense.data import load_records
from sparse2dense.decontamination import normalize_problem
from sparse2dense.grading import grade, grade_completion
from sparse2dense.graph import Stage
from sparse2dense.sections import DataSection, WordTask
from sparse2dense.spec import StageSpec
from sparse2dense.stages.data_prep import prepare, prepare_toy, run_data_prep
from sparse2dense.words import PEOPLE, generate_words

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("S2D_DATA_DIR") or ROOT.parent / "shared" / "data")
QWEN3 = ROOT / "configs" / "qwen3-8b-to-1.7b.yaml"
TASK = WordTask(max_steps=6, doubling_from_level=5, num_labeled=300, num_unlabeled=300, num_test=120)
SPLITS = generate_words(TASK, seed=0)
ALL = [r for records in SPLITS.values() for r in records]


def _replay(record):
    """The running count after each event, recomputed from the metadata alone."""
    counts = [record["metadata"]["start"]]
    for op in record["metadata"]["operations"]:
        step = {"add": lambda c, v: c + v, "subtract": lambda c, v: c - v, "multiply": lambda c, v: c * v}
        counts.append(step[op["op"]](counts[-1], op["value"]))
    return counts


def test_same_seed_same_problems_other_seed_others():
    again = generate_words(TASK, seed=0)
    assert again == SPLITS
    other = generate_words(TASK, seed=1)
    assert [r["problem"] for r in other["test"]] != [r["problem"] for r in SPLITS["test"]]


def test_answer_follows_from_the_operations_the_text_states():
    for record in ALL:
        counts = _replay(record)
        assert record["answer"] == str(counts[-1]), record
        ops = record["metadata"]["operations"]
        assert len(ops) == record["metadata"]["difficulty"]
        # The numbers written in the text are the start and each added or removed amount, in order.
        stated = [int(n) for n in re.findall(r"\d+", record["problem"])]
        assert stated == [record["metadata"]["start"]] + [o["value"] for o in ops if o["op"] != "multiply"]


def test_counts_never_go_below_zero_and_operands_stay_in_the_level_range():
    for record in ALL:
        level = record["metadata"]["difficulty"]
        top = TASK.max_operand[level - 1]
        assert min(_replay(record)) >= 0, record
        assert 1 <= record["metadata"]["start"] <= top
        for op in record["metadata"]["operations"]:
            assert 1 <= op["value"] <= top if op["op"] != "multiply" else op["value"] == 2


def test_easy_levels_only_add_and_harder_ones_remove_and_double():
    ops_by_level = {}
    for record in ALL:
        kinds = [o["op"] for o in record["metadata"]["operations"]]
        assert kinds.count("multiply") <= 1
        ops_by_level.setdefault(record["metadata"]["difficulty"], Counter()).update(kinds)
    assert set(ops_by_level[1]) == {"add"}  # one addition of single digits
    assert TASK.max_operand[0] == 9
    assert "subtract" in ops_by_level[2] and "multiply" not in ops_by_level[4]
    assert ops_by_level[5]["multiply"] > 0 and ops_by_level[6]["multiply"] > 0


def test_every_level_equally_present_and_any_prefix_balanced():
    for split, records in SPLITS.items():
        counts = Counter(r["metadata"]["difficulty"] for r in records)
        assert set(counts) == set(range(1, 7)), split
        assert max(counts.values()) - min(counts.values()) <= 1, (split, counts)
    first = Counter(r["metadata"]["difficulty"] for r in SPLITS["test"][:12])
    assert first == dict.fromkeys(range(1, 7), 2)


def test_ids_unique_and_no_problem_text_in_two_splits():
    ids = [r["id"] for r in ALL]
    assert len(set(ids)) == len(ids)
    assert SPLITS["test"][17]["id"] == "words-test-17"
    texts = [normalize_problem(r["problem"]) for r in ALL]
    assert len(set(texts)) == len(texts)


def test_pronouns_match_the_person():
    pronouns = {p.name: {p.subject, p.object, p.possessive} for p in PEOPLE}
    assert {frozenset(v) for v in pronouns.values()} == {
        frozenset({"he", "him", "his"}),
        frozenset({"she", "her"}),
    }
    for record in ALL:
        words = set(re.findall(r"[a-z]+", record["problem"].lower()))
        wrong = {"he", "him", "his", "she", "her"} - pronouns[record["metadata"]["name"]]
        assert not words & wrong, record["problem"]
        assert record["metadata"]["name"] in record["problem"]


def test_a_task_too_small_for_its_sizes_is_refused(monkeypatch):
    """One person and one item leave a few hundred one-step texts: asking for more is refused."""
    import sparse2dense.words as words

    monkeypatch.setattr(words, "PEOPLE", words.PEOPLE[:1])
    monkeypatch.setattr(words, "ITEMS", words.ITEMS[:1])
    tiny = WordTask(min_steps=1, max_steps=1, max_operand=[1], num_labeled=600, num_unlabeled=1, num_test=1)
    with pytest.raises(ValueError, match=r"word task too small: no new 1-step problem .*max_operand"):
        generate_words(tiny, seed=0)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["data.words.min_steps=4", "data.words.max_steps=2"],
            r"data\.words: min_steps \(4\) must not exceed",
        ),
        (["data.words.max_steps=7"], r"data\.words\.max_steps"),
        (["data.words.max_operand=[9, 9]"], r"data\.words: max_operand has 2 entries.*max_steps \(4\)"),
        (["data.eval_max_problems={gsm8k: 64}"], r"data\.eval_max_problems: 'gsm8k' not in eval_sets"),
        (["data.eval_max_problems={words_test: 0}"], r"data\.eval_max_problems\.words_test"),
        (["data.eval_sets=[toy_test]"], r"data\.eval_sets: 'toy_test' is generated by data\.kind toy only"),
    ],
)
def test_config_errors_name_the_field(overrides, message):
    base = ["data.kind=words", "data.eval_sets=[words_test]"]
    with pytest.raises(ConfigError, match=message):
        load_config(QWEN3, [*base, *overrides])


def test_words_accepts_its_own_set_and_benchmarks_and_ignores_sources():
    cfg = load_config(
        QWEN3,
        [
            "data.kind=words",
            "data.eval_sets=[words_test, gsm8k]",
            "data.eval_max_problems={gsm8k: 8}",
            "data.labeled_sources=[nosuchset]",
        ],
    )
    assert cfg.data.eval_sets == ["words_test", "gsm8k"] and cfg.data.eval_max_problems == {"gsm8k": 8}
    with pytest.raises(ConfigError, match=r"'words_test' is not a known dataset"):
        load_config(QWEN3, ["data.eval_sets=[words_test]"])  # kind math does not generate it


def test_eval_max_problems_keeps_the_first_n_and_changes_nothing_else():
    data = load_config(ROOT / "configs" / "toy.yaml").data
    cut = prepare(DataSection.model_validate({**data.model_dump(), "eval_max_problems": {"toy_test": 5}}), 0)
    whole = prepare_toy(data, 0)
    assert len(whole["eval/toy_test"]) > 5 and cut["eval/toy_test"] == whole["eval/toy_test"][:5]
    assert {k: v for k, v in cut.items() if k != "eval/toy_test"} == {
        k: v for k, v in whole.items() if k != "eval/toy_test"
    }
    assert prepare(data, 0) == whole  # no limit: the toy kind's output as before


def test_words_without_data_dir_names_what_needs_it():
    section = DataSection(kind="words", eval_sets=["words_test", "gsm8k"])
    with pytest.raises(ValueError, match=r"data\.data_dir must be set for eval set 'gsm8k'"):
        prepare(section, 0)


@pytest.mark.skipif(
    not (DATA / "gsm8k" / "test.jsonl").is_file(), reason=f"benchmark data not found at {DATA}"
)
def test_data_prep_writes_word_splits_and_a_gsm8k_slice(tmp_path):
    section = DataSection(
        kind="words",
        words=TASK,
        eval_sets=["words_test", "gsm8k"],
        eval_max_problems={"gsm8k": 16},
        data_dir=str(DATA),
        heldout_fraction=0.25,
    )
    spec = StageSpec(
        stage=Stage.DATA_PREP,
        name="data_prep",
        key="test",
        config={"data": section.model_dump()},
        semantic_config={},
        output_dir=str(tmp_path),
        seed=0,
    )
    metrics = run_data_prep(spec, tmp_path).metrics
    gsm8k = load_records(tmp_path / "eval" / "gsm8k.jsonl")
    assert [r["id"] for r in gsm8k] == [f"gsm8k-{i}" for i in range(16)]
    assert load_records(tmp_path / "eval" / "words_test.jsonl") == SPLITS["test"]
    removed = json.loads((tmp_path / "decontamination.json").read_text())
    assert set(removed) == {"stage1", "heldout", "unlabeled"}  # decontamination ran on every split
    stage1 = load_records(tmp_path / "splits" / "stage1.jsonl")
    heldout = load_records(tmp_path / "splits" / "heldout.jsonl")
    unlabeled = load_records(tmp_path / "splits" / "unlabeled.jsonl")
    assert len(stage1) + len(heldout) + len(removed["stage1"]) + len(removed["heldout"]) == 300
    assert len(unlabeled) + len(removed["unlabeled"]) == 300
    assert sum(len(v) for v in removed.values()) <= 6  # only the rare 13-word overlap with a test problem
    assert all("answer" not in r for r in unlabeled) and all(r["answer"] for r in stage1 + heldout)
    assert metrics["n_eval_gsm8k"] == 16.0 and metrics["n_eval_words_test"] == 120.0


def test_grader_reads_prose_and_boxed_answers_of_word_problems():
    for record in SPLITS["test"][:6]:
        answer = record["answer"]
        assert grade(answer, f"The final answer is {answer}.").correct
        assert grade_completion(answer, f"So the count is {answer}.\n\\boxed{{{answer}}}").correct
        assert not grade_completion(answer, f"\\boxed{{{int(answer) + 1}}}").correct
