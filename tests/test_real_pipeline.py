"""The whole pipeline on real weights at micro size: SmolLM2-135M-Instruct from its GGUF file, the
layer-pruned student, word problems and a GSM8K slice, every stage of configs/smollm2-cpu.yaml
(about 10 minutes on 2 cores: `pytest -m slow tests/test_real_pipeline.py`)."""

import json
from pathlib import Path

import pytest

from sparse2dense.sample_preview import SAMPLES_FILE
from tests.conftest import ROOT

REAL = ROOT / "configs" / "smollm2-cpu.yaml"
# A few problems and steps per stage: a path check, not a learning test.
REAL_MICRO = [
    "data.words.num_labeled=40",
    "data.words.num_unlabeled=16",
    "data.words.num_test=8",
    "data.eval_max_problems.gsm8k=4",
    "student.prune.calibration_prompts=4",
    "teacher_rl.steps=2",
    "teacher_rl.prompts_per_step=2",
    "teacher_rl.num_generations=4",
    "teacher_rl.max_completion_length=24",
    "teacher_rollouts.max_new_tokens=24",
    "warmup.epochs=1",
    "warmup.batch_size=8",
    "opd.steps=2",
    "opd.prompts_per_step=4",
    "opd.max_completion_length=24",
    "opd.diagnostic_prompts=4",
    "eval.max_new_tokens=24",
]


@pytest.mark.slow
@pytest.mark.skipif(not (ROOT.parent / "shared" / "data").is_dir(), reason="needs ../shared/data (GSM8K)")
def test_every_stage_runs_on_the_real_model(prefect_server, smollm2_gguf, tmp_path):
    from flows.post_train import post_train
    from sparse2dense.config import load_config
    from sparse2dense.gguf import converted_dir, file_digest
    from sparse2dense.store import verify_stage_dir

    store = tmp_path / "store"
    paths = [f"store_dir={store}", f"runs_dir={tmp_path / 'runs'}", f"teacher.name_or_path={smollm2_gguf}"]
    cfg = load_config(REAL, [*REAL_MICRO, *paths, f"student.name_or_path={smollm2_gguf}"])
    summary = post_train(cfg)

    stages = summary["stages"]
    assert summary["status"] == "completed" and not summary["errors"]
    assert set(stages) >= {
        "data_prep",
        "prune/student",
        "teacher_rl",
        "teacher_rollouts",
        "warmup",
        "opd",
        "eval/student_final",
    }
    for result in stages.values():
        assert result["status"] == "computed"
        assert verify_stage_dir(Path(result["path"])) is None
    assert (converted_dir(store, file_digest(smollm2_gguf)) / "model.safetensors").is_file()
    for name in ("prune/student", "opd"):
        config = json.loads((Path(stages[name]["path"]) / "model" / "config.json").read_text())
        assert config["num_hidden_layers"] == 24 and config["vocab_size"] == 49152
    for model in ("teacher_base", "student_base", "teacher_rl", "student_final"):
        for bench, size in (("words_test", 8), ("gsm8k", 4)):
            assert summary["eval"][model][bench]["num_problems"] == size
    assert (Path(stages["eval/student_final"]["path"]) / SAMPLES_FILE).is_file()
    assert 0.0 <= stages["teacher_rl"]["metrics"]["truncation_ratio"] <= 1.0
    assert summary["registered_model"]["name"] == "smollm2-cpu-student"

    # `s2d gains` reads the finished run: both roles, both benchmarks, paired on the same problems.
    from sparse2dense.gains import read_summary, run_gains

    run = read_summary(summary["summary_path"])
    gains = {(g.role, g.benchmark): g for g in run_gains(run)}
    assert set(gains) == {(r, b) for r in ("teacher", "student") for b in ("gsm8k", "words_test")}
    assert gains["teacher", "words_test"].delta.problems == (8,)
    assert run.seed == cfg.seed
