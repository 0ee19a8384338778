"""`s2d`: run the pipeline or a sweep, serve the UI deployments, validate a config, grade answers.

    s2d run [CONFIG] [--set section.field=value ...] [--force STAGE ...]
    s2d sweep SWEEP.yaml [--arm NAME ...] [--seeds 1,2,3] [--set ...] [--force STAGE ...] [--plan]
    s2d evaluate [CONFIG] [--role student|teacher] [--model-path DIR | HUB_ID | models:/NAME/VERSION]
    s2d up | s2d down                 local Prefect server + MLflow UI on 127.0.0.1
    s2d serve [--config CONFIG] [--sweep SWEEP.yaml] [--schedule-active]
    s2d validate CONFIG [--set ...] [--explain]
    s2d grade INPUT.jsonl [--output OUT.jsonl] [--limit-s S] [--workers N]
    s2d gains RUN [RUN ...]           trained vs starting model per role: per run, and over runs

Flows use the Prefect server named by `PREFECT_API_URL`, else the one `s2d up` started for the
runs directory, else a temporary local server whose database lives under the runs directory (so
`s2d up` later shows those runs too). Prefect is imported only after that environment is set.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
from pathlib import Path

from sparse2dense.config import ConfigError, PipelineConfig, load_config
from sparse2dense.metrics import avg_metric_name
from sparse2dense.pipeline import PlannedStage, plan_evaluation, plan_stages, unknown_forced

DEFAULT_CONFIG = "configs/toy.yaml"
DEFAULT_SWEEP = "configs/sweeps/toy-ablations.yaml"


def _default_config(name: str = DEFAULT_CONFIG) -> Path:
    local = Path(name)
    return local if local.is_file() else Path(__file__).resolve().parents[1] / name


def prepare_environment(cfg: PipelineConfig, temporary_server: bool = False) -> None:
    """Embedded defaults: Prefect state and MLflow under the runs directory, no hub access for toys.
    With `temporary_server` and no server to use, one is started for this command (`TemporaryPrefect`:
    a terminal's Ctrl-C reaches the flow, which records it there, and not the server)."""
    from sparse2dense.services import TemporaryPrefect, running_prefect_api

    runs = Path(cfg.runs_dir).resolve()
    runs.mkdir(parents=True, exist_ok=True)
    if not os.environ.get("PREFECT_API_URL") and (api := running_prefect_api(runs)):
        os.environ["PREFECT_API_URL"] = api
    if not os.environ.get("PREFECT_API_URL"):
        os.environ.setdefault("PREFECT_HOME", str(runs / "prefect"))
        os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
        # No phoning home from an embedded server (and no network to do it with).
        os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        if temporary_server:
            os.environ["PREFECT_API_URL"] = TemporaryPrefect(runs).api_url
    if auth := os.environ.get("PREFECT_SERVER_API_AUTH_STRING"):  # a server of ours that asks for it
        os.environ.setdefault("PREFECT_API_AUTH_STRING", auth)
    os.environ.setdefault("PREFECT_LOGGING_LOG_PRINTS", "true")
    if cfg.teacher.toy is not None or cfg.student.toy is not None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # The project's flows/ and tasks/ live beside the library in a source checkout.
    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:
        sys.path.insert(0, root)


def print_summary(summary: dict) -> None:
    print(f"\n{'stage':<22}{'status':<10}{'wall_s':>8}  key")
    for name, entry in summary["stages"].items():
        print(f"{name:<22}{entry['status']:<10}{entry['wall_s']:>8.1f}  {entry['key']}")
    print("\nevaluation")
    for model, benches in summary["eval"].items():
        for bench, m in benches.items():
            avg = avg_metric_name(m)
            print(f"  {model:<16}{bench:<12}{avg} {m[avg]:.3f} +- {m[avg + '_stderr']:.3f}")
    print(f"\nlabeled examples used: {summary['labels']}")
    print(f"total wall time: {summary['wall_s']:.1f}s; summary: {summary['summary_path']}")


def check_forced(force: list[str], plans: list[list[PlannedStage]]) -> None:
    """Refuse `--force` names that match no planned stage or stage kind (a typo would leave it cached)."""
    if problem := unknown_forced(force, plans):
        raise ConfigError(f"--force: {problem}")


def check_writable(configs: list[PipelineConfig]) -> None:
    """Refuse, before any server or stage starts, a runs or store directory that cannot be written:
    create it and a temporary file in it, as the run would."""
    for field in ("runs_dir", "store_dir"):
        for path in dict.fromkeys(Path(getattr(cfg, field)).resolve() for cfg in configs):
            if path.exists() and not path.is_dir():
                raise ConfigError(f"{field}: {path} is not a directory")
            try:
                path.mkdir(parents=True, exist_ok=True)
                with tempfile.TemporaryFile(dir=path):
                    pass
            except OSError as err:
                where = f" ({err.filename})" if err.filename and Path(err.filename) != path else ""
                raise ConfigError(f"{field}: cannot write to {path}: {err.strerror}{where}") from None


# 128 + SIGINT: what a shell reports for a command ended by Ctrl-C
INTERRUPTED = 130


def interrupted() -> int:
    # The interpreter's last garbage collection at exit walks every object torch, transformers and
    # mlflow made (seconds on a busy machine); frozen, they are skipped and Ctrl-C ends promptly.
    gc.freeze()
    print(
        "interrupted: run the same command to resume (finished stages are cached, "
        "interrupted ones resume from their checkpoints)",
        file=sys.stderr,
    )
    return INTERRUPTED


def cmd_run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config or _default_config(), args.set)
    check_forced(args.force, [plan_stages(cfg)])
    check_writable([cfg])
    try:
        prepare_environment(cfg, temporary_server=True)
        from flows.post_train import post_train

        summary = post_train(cfg, force_rerun=args.force)
    except KeyboardInterrupt:  # the flow run has recorded it (Crashed) and stopped its stages
        return interrupted()
    print_summary(summary)
    return 0


def _print_table(rows: list[dict]) -> None:
    headers = list(rows[0])
    widths = [max(len(h), *(len(str(r[h])) for r in rows)) for h in headers]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    for row in rows:
        print("  ".join(str(row[h]).ljust(w) for h, w in zip(headers, widths, strict=True)))


def print_sweep_report(report: dict) -> None:
    plan = report["plan"]
    print(f"\nsweep {report['sweep']} (reference arm: {report['reference']}, seeds {report['seeds']})")
    _print_table(report["rows"])
    if report["comparisons"]:
        print("\ncomparisons (a - b; paired bootstrap over problems within each seed, pooled over seeds)")
        _print_table(report["comparisons"])
    print(
        f"\nstages computed: {report['computed_stages']}, cached: {report['cached_stages']}; "
        f"distinct stage keys across arms: {plan['distinct_stage_keys']}; "
        f"naive count (every arm alone): {plan['naive_stage_count']}"
    )
    print(f"report: {report['report_dir']} (report.md, report.csv, report.png, sweep.json)")


def _seed_list(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--seeds takes integers separated by commas, got {text!r}"
        ) from None
    if not seeds:
        raise argparse.ArgumentTypeError("--seeds names no seed")
    if out_of_range := [s for s in seeds if not 0 <= s < 2**32]:
        raise argparse.ArgumentTypeError(f"--seeds must lie in 0..{2**32 - 1}; got {out_of_range}")
    return seeds


def cmd_sweep(args: argparse.Namespace) -> int:
    from sparse2dense.sweep import arm_runs, load_sweep, sweep_plan

    sweep = load_sweep(args.sweep, args.set, args.seeds)
    runs = arm_runs(sweep, args.arm or None)
    check_forced(args.force, [plan_stages(r.config) for r in runs])
    if args.plan:
        plan = sweep_plan(runs)
        print(json.dumps(plan.model_dump(exclude={"shared"}), indent=2))
        return 0
    check_writable([sweep.base, *(r.config for r in runs)])
    try:
        prepare_environment(sweep.base, temporary_server=True)
        from flows.sweep import SweepFailed, ablation_sweep

        report = ablation_sweep(sweep, arms=args.arm or None, force_rerun=args.force)
    except KeyboardInterrupt:
        return interrupted()
    except SweepFailed as failed:  # the report names the failed runs; the stages' logs say why
        print_sweep_report(failed.report)
        print(f"error: {failed}", file=sys.stderr)
        return 1
    print_sweep_report(report)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    cfg = load_config(args.config or _default_config(), args.set)
    check_forced(args.force, [plan_evaluation(cfg, args.role)])
    check_writable([cfg])
    prepare_environment(cfg)
    model_path = args.model_path
    if model_path:
        # Checked (a models:/ URI resolved) before the flow starts a Prefect server.
        from sparse2dense.preflight import model_source_problem

        if model_path.startswith("models:/"):
            from tasks.registry import resolve_model_source

            model_path = resolve_model_source(model_path, cfg)
        elif problem := model_source_problem(model_path):
            raise ConfigError(problem)
    try:
        prepare_environment(cfg, temporary_server=True)
        from flows.evaluate import evaluate

        summary = evaluate(cfg, role=args.role, model_path=model_path, force_rerun=args.force)
    except KeyboardInterrupt:
        return interrupted()
    print_summary(summary)
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from sparse2dense.services import up

    try:
        services = up(Path(args.runs_dir), args.prefect_port, args.mlflow_port)
    except KeyboardInterrupt:  # what this call started is stopped again
        return INTERRUPTED
    print(f"Prefect UI: {services['prefect']['ui_url']}   MLflow UI: {services['mlflow']['ui_url']}")
    print(f"export PREFECT_API_URL={services['prefect']['api_url']}   # for prefect's own CLI")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from sparse2dense.services import down

    outcome = down(Path(args.runs_dir))
    for name, what in outcome.items():
        print(f"{name}: {what}")
    if not outcome:
        print("nothing was running")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from sparse2dense.services import running_prefect_api

    config_path = Path(args.config or _default_config()).resolve()
    sweep_path = Path(args.sweep or _default_config(DEFAULT_SWEEP)).resolve()
    cfg = load_config(config_path)
    prepare_environment(cfg)
    if not os.environ.get("PREFECT_API_URL") and running_prefect_api(Path(cfg.runs_dir).resolve()) is None:
        print("error: no Prefect server: run `s2d up` first (or set PREFECT_API_URL)", file=sys.stderr)
        return 2
    # Deployment entrypoints are paths relative to the project root.
    os.chdir(Path(__file__).resolve().parents[1])
    from flows.deployments import serve_deployments

    serve_deployments(config_path, sweep_path, args.schedule_active, limit=args.limit)
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from sparse2dense.pipeline import plan_keys, plan_stages

    cfg = load_config(args.config, args.set)
    keys = plan_keys(cfg)
    print(f"config {args.config}: valid ({cfg.name})")
    if args.explain:
        from sparse2dense.explain import explain, render

        print(render(explain(cfg)) + "\n\nplanned stages and their cache keys:")
    for planned in plan_stages(cfg):
        needs = ", ".join(f"{r}<-{n}" for r, n in planned.upstream.items())
        print(f"  {planned.name:<22}{keys[planned.name]}  {needs}")
    return 0


def cmd_grade(args: argparse.Namespace) -> int:
    from sparse2dense import grader_pool
    from sparse2dense.grade_file import default_output, grade_file

    if not args.input.is_file():
        raise ConfigError(f"input file not found: {args.input}")
    grader_pool.configure(workers=args.workers, limit_s=args.limit_s)
    report = grade_file(args.input, args.output or default_output(args.input), echo=sys.stdout)
    if report.malformed:
        print(
            f"error: {len(report.malformed)} malformed line(s) in {args.input}, not graded:", file=sys.stderr
        )
        for problem in report.malformed:
            print(f"  {problem}", file=sys.stderr)
        return 1
    return 0


def cmd_gains(args: argparse.Namespace) -> int:
    from sparse2dense.gains import SummaryError, read_summary, render

    try:
        print(render([read_summary(path) for path in args.runs]))
    except SummaryError as err:
        raise ConfigError(str(err)) from None
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="s2d", description="sparse-to-dense post-training pipeline")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the post-train flow")
    run.add_argument("config", nargs="?", help=f"YAML config (default {DEFAULT_CONFIG})")
    run.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    run.add_argument("--force", action="append", default=[], metavar="STAGE", help="recompute this stage")
    run.set_defaults(func=cmd_run)
    val = sub.add_parser("validate", help="validate a config and print the planned stages and keys")
    val.add_argument("config")
    val.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    val.add_argument(
        "--explain",
        action="store_true",
        help="print every field's value, whether it is part of the cache key, and its description",
    )
    val.set_defaults(func=cmd_validate)
    grade = sub.add_parser("grade", help="grade a jsonl of {gold, pred} records; print totals per verdict")
    grade.add_argument("input", type=Path)
    grade.add_argument("--output", type=Path, help="graded records (default INPUT.graded.jsonl)")
    grade.add_argument("--limit-s", type=float, default=5.0, help="wall-clock limit per symbolic check")
    grade.add_argument(
        "--workers", type=int, default=None, help="grader worker processes (default min(4, cpus))"
    )
    grade.set_defaults(func=cmd_grade)
    gains = sub.add_parser(
        "gains",
        help="each role's trained model against its start, on the same problems: per run, and over runs",
    )
    gains.add_argument("runs", nargs="+", type=Path, help="a run's summary.json or its folder")
    gains.set_defaults(func=cmd_gains)
    sweep = sub.add_parser("sweep", help="run the arms of an ablation sweep and build the comparison report")
    sweep.add_argument("sweep", type=Path)
    sweep.add_argument("--arm", action="append", default=[], help="run only this arm (repeatable)")
    sweep.add_argument(
        "--seeds",
        type=_seed_list,
        metavar="N,N,...",
        help="run every arm at these seeds (replaces the file's)",
    )
    sweep.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    sweep.add_argument("--force", action="append", default=[], metavar="STAGE", help="recompute this stage")
    sweep.add_argument("--plan", action="store_true", help="print the stage counts and exit")
    sweep.set_defaults(func=cmd_sweep)
    ev = sub.add_parser("evaluate", help="evaluate one model on the configured eval sets")
    ev.add_argument("config", nargs="?", help=f"YAML config (default {DEFAULT_CONFIG})")
    ev.add_argument("--role", choices=["student", "teacher"], default="student")
    ev.add_argument(
        "--model-path",
        help="a model directory, hub id or registered student (models:/NAME/VERSION) replacing the role's model",
    )
    ev.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    ev.add_argument("--force", action="append", default=[], metavar="STAGE")
    ev.set_defaults(func=cmd_evaluate)
    for name, func, text in (
        ("up", cmd_up, "start a local Prefect server and MLflow UI on 127.0.0.1"),
        ("down", cmd_down, "stop what `s2d up` started"),
    ):
        svc = sub.add_parser(name, help=text)
        svc.add_argument("--runs-dir", default="runs")
        svc.add_argument("--prefect-port", type=int, default=4200)
        svc.add_argument("--mlflow-port", type=int, default=5000)
        svc.set_defaults(func=func)
    serve = sub.add_parser("serve", help="serve the post-train, ablation-sweep and evaluate deployments")
    serve.add_argument("--config", help=f"preset that prefills the forms (default {DEFAULT_CONFIG})")
    serve.add_argument(
        "--sweep", type=Path, help=f"sweep that prefills ablation-sweep (default {DEFAULT_SWEEP})"
    )
    serve.add_argument("--schedule-active", action="store_true", help="activate the nightly sweep schedule")
    serve.add_argument("--limit", type=int, default=1, help="flow runs at once (default 1)")
    serve.set_defaults(func=cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `s2d validate ... | head`: the reader left; nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0


if __name__ == "__main__":
    sys.exit(main())
