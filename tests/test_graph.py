"""The stage graph is the one place stages are declared: a stage added to it (and nowhere else)
reaches the plan, the keys, the sweep plan, the launcher and config validation. The scheduler that
fans stages out, and the import layers the graph keeps clean."""

import ast
import os
from pathlib import Path

import pytest

from sparse2dense import graph
from sparse2dense.config import ConfigError, load_config
from sparse2dense.graph import GRPOInputs, Stage, StageDef, StageKind, Step
from sparse2dense.launch import stage_command
from sparse2dense.pipeline import plan_keys, plan_stages, stage_payload
from sparse2dense.schedule import Job, Scheduler
from sparse2dense.spec import StageSpec
from sparse2dense.sweep import Arm, arm_runs, load_sweep, sweep_plan
from tests.conftest import ROOT, TOY

TOY_SWEEP = ROOT / "configs" / "sweeps" / "toy-ablations.yaml"


def _with_polish(monkeypatch) -> None:
    """A dummy training stage, `polish`: GRPO on the final student with the student_rl section,
    always on, between the last student stage and the final evaluation."""
    polish = StageDef(
        name="polish",
        version=1,
        kind=StageKind.TRAINING,
        program="student_rl",
        inputs=GRPOInputs,
        section="student_rl",
        field="grpo",
        models={"policy": "self"},
        optional=True,
    )
    steps = list(graph.GRAPH.pipeline)
    final = [s.name for s in steps].index(graph.GRAPH.final_eval)
    steps.insert(
        final,
        Step(
            name="polish",
            stage="polish",
            acts_on="student",
            inputs={"data": "data_prep", "policy": "@student"},
            becomes="student",
        ),
    )
    patched = graph.GRAPH.model_copy(
        update={"stages": graph.GRAPH.stages | {"polish": polish}, "pipeline": tuple(steps)}
    )
    monkeypatch.setattr(graph, "GRAPH", patched)


def test_a_stage_added_to_the_graph_reaches_plan_keys_sweep_and_validation(monkeypatch, tmp_path):
    cfg = load_config(TOY)
    before_plan, before_keys = plan_stages(cfg), plan_keys(cfg)
    tight = [
        "student_rl.memory.per_device_train_batch_size=5",
        "launcher.kind=accelerate",
        "launcher.num_processes=2",
    ]
    load_config(TOY, tight)  # student_rl is off: its batch is not checked
    sweep_before = sweep_plan(arm_runs(load_sweep(TOY_SWEEP)))
    with pytest.raises(ValueError, match="cannot be switched off"):
        Arm(disable=["polish"])

    _with_polish(monkeypatch)

    plan = plan_stages(cfg)
    names = [p.name for p in plan]
    assert names == [p.name for p in before_plan][:-1] + ["polish", "eval/student_final"]
    assert plan[-2].upstream == {"data": "data_prep", "policy": "opd"}
    assert plan[-1].upstream["model"] == "polish"
    keys = plan_keys(cfg)
    assert {n: k for n, k in keys.items() if n not in ("polish", "eval/student_final")} == {
        n: k for n, k in before_keys.items() if n != "eval/student_final"
    }
    assert keys["eval/student_final"] != before_keys["eval/student_final"]

    # the program receives typed, validated inputs; the launcher starts the program the graph names
    config, semantic = stage_payload(cfg, "polish", "student")
    spec = StageSpec(
        stage="polish",
        name="polish",
        key=keys["polish"],
        config=config,
        semantic_config=semantic,
        output_dir=str(tmp_path),
        seed=cfg.seed,
    )
    assert spec.inputs_of(GRPOInputs).grpo == cfg.student_rl
    assert (
        stage_command("polish", "s.json", spec.inputs.launcher, python="py")[-2]
        == "sparse2dense.stages.student_rl"
    )

    # the sweep plans it in every arm, and an arm may switch it off
    sweep = sweep_plan(arm_runs(load_sweep(TOY_SWEEP)))
    assert {r: n - 1 for r, n in sweep.stages_per_run.items()} == sweep_before.stages_per_run
    assert Arm(disable=["polish"]).disable == ["polish"]

    # config validation checks the new training stage's batch (it reads student_rl, now planned)
    with pytest.raises(ConfigError, match=r"student_rl\.memory"):
        load_config(TOY, tight)


def test_every_stage_program_exists_and_every_step_reads_earlier_steps():
    g = graph.current()
    for d in g.stages.values():
        assert (ROOT / "sparse2dense" / "stages" / f"{d.program}.py").is_file(), d.name
        assert d.field in d.inputs.model_fields, d.name
    seen: set[str] = set()
    for step in g.pipeline:
        assert step.stage in g.stages
        for source in step.inputs.values():
            assert source.startswith("@") or source in seen, (step.name, source)
        seen.add(step.name)
    assert g.final_eval in seen and g.stage(g.step(g.final_eval).stage).name == Stage.EVAL
    assert g.optional() == ["teacher_rl", "warmup", "opd", "student_rl"]


# ---- the scheduler ------------------------------------------------------------------------------


def _diamond(**gpus: int) -> list[Job]:
    """a -> (b, c) -> d"""
    needs = {"a": set(), "b": {"a"}, "c": {"a"}, "d": {"b", "c"}}
    return [Job(key=k, label=k, needs=frozenset(v), gpus=gpus.get(k, 0)) for k, v in needs.items()]


def _keys(started) -> list[str]:
    return [job.key for job, _ in started]


def test_jobs_start_when_their_upstream_is_done_up_to_the_limit():
    s = Scheduler(_diamond(), max_parallel=2)
    assert _keys(s.startable()) == ["a"]
    assert s.startable() == []  # a still runs
    s.finish("a", ok=True)
    assert _keys(s.startable()) == ["b", "c"]
    s.finish("c", ok=True)
    assert s.startable() == []  # d waits for b
    s.finish("b", ok=True)
    assert _keys(s.startable()) == ["d"]
    s.finish("d", ok=True)
    assert s.finished


def test_one_at_a_time_keeps_plan_order():
    s = Scheduler(_diamond(), max_parallel=1)
    order = []
    while not s.finished:
        (job, _), *rest = s.startable()
        assert not rest
        order.append(job.key)
        s.finish(job.key, ok=True)
    assert order == ["a", "b", "c", "d"]


def test_the_critical_path_starts_before_stages_nothing_waits_on():
    # As the pipeline lists them: two evaluations of the base models, then teacher RL and its chain.
    needs = {"data": set(), "eval_t": {"data"}, "eval_s": {"data"}, "rl": {"data"}, "rollouts": {"rl"}}
    needs |= {"warmup": {"rollouts"}, "eval_rl": {"rl"}}
    s = Scheduler([Job(key=k, label=k, needs=frozenset(v)) for k, v in needs.items()], max_parallel=2)
    s.startable()
    s.finish("data", ok=True)
    assert _keys(s.startable()) == ["rl", "eval_t"]
    s.finish("rl", ok=True)
    assert _keys(s.startable()) == ["rollouts"]  # the chain first, then plan order among equals


def test_a_failure_blocks_its_dependants_and_nothing_else():
    jobs = _diamond() + [Job(key="e", label="e", needs=frozenset({"a"}))]
    s = Scheduler(jobs, max_parallel=3)
    s.startable()
    s.finish("a", ok=True)
    assert _keys(s.startable()) == ["b", "c", "e"]
    assert s.finish("b", ok=False) == ["d"]
    s.finish("c", ok=True)
    s.finish("e", ok=True)
    assert s.startable() == [] and s.finished
    assert (s.done, s.failed, s.blocked) == ({"a", "c", "e"}, {"b"}, {"d"})


def test_gpus_are_held_exclusively_unless_shared():
    s = Scheduler(_diamond(b=2, c=1, d=1), max_parallel=4, gpu_ids=[0, 1])
    s.startable()
    s.finish("a", ok=True)
    assert s.startable() == [(s.jobs[1], [0, 1])]  # c must wait for a free GPU
    s.finish("b", ok=True)
    assert s.startable() == [(s.jobs[2], [0])]
    shared = Scheduler(_diamond(b=2, c=1), max_parallel=4, gpu_ids=[0, 1], share_gpus=True)
    shared.startable()
    shared.finish("a", ok=True)
    assert [g for _, g in shared.startable()] == [[0, 1], [0]]


def test_gpu_needs_are_ignored_without_gpus_and_refused_beyond_them():
    s = Scheduler(_diamond(b=8), max_parallel=2)
    s.startable()
    s.finish("a", ok=True)
    assert [g for _, g in s.startable()] == [[], []]
    with pytest.raises(ValueError, match=r"\['b'\] need more GPUs than the 2 available"):
        Scheduler(_diamond(b=4), gpu_ids=[0, 1])
    with pytest.raises(ValueError, match="not jobs"):
        Scheduler([Job(key="x", label="x", needs=frozenset({"y"}))])


# ---- layers ---------------------------------------------------------------------------------------


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside functions."""
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_the_library_imports_no_prefect_and_nothing_below_the_programs_imports_them():
    library = ROOT / "sparse2dense"
    for path in sorted(library.rglob("*.py")):
        modules = _imports(path)
        top = {m.split(".")[0] for m in modules}
        assert not top & {"prefect", "flows", "tasks"}, path
        if "stages" not in path.relative_to(library).parts:
            assert not [m for m in modules if m.startswith("sparse2dense.stages")], path


def test_a_stage_process_gets_its_gpus_and_threads(tmp_path):
    from sparse2dense.pipeline import stage_payload
    from tasks.stages import StageRequest, Tracking, _env

    cfg = load_config(TOY)
    config, semantic = stage_payload(cfg, Stage.EVAL, "student")
    spec = StageSpec(
        stage=Stage.EVAL,
        name="eval/x",
        key="k",
        config=config,
        semantic_config=semantic,
        output_dir=str(tmp_path),
        seed=1,
    )
    tracking = Tracking(tracking_uri="sqlite:///x.db", experiment_id="1", parent_run_id="p")
    request = StageRequest(spec=spec, store=str(tmp_path), tracking=tracking)
    untouched = _env(request, "r")
    assert untouched.get("CUDA_VISIBLE_DEVICES") == os.environ.get("CUDA_VISIBLE_DEVICES")
    placed = _env(request.model_copy(update={"devices": [2, 3], "threads": 1}), "r")
    assert placed["CUDA_VISIBLE_DEVICES"] == "2,3" and placed["OMP_NUM_THREADS"] == "1"
    assert _env(request.model_copy(update={"devices": []}), "r")["CUDA_VISIBLE_DEVICES"] == ""
