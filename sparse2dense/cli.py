"""`s2d`: run the pipeline, validate a config, grade answers.

    s2d run [CONFIG] [--set section.field=value ...] [--force STAGE ...]
    s2d validate CONFIG [--set ...]
    s2d grade INPUT.jsonl [--output OUT.jsonl] [--limit-s S] [--workers N]

With no `PREFECT_API_URL`, flows run against a temporary local Prefect server whose database lives
under the config's runs directory (so `prefect server start` on the same PREFECT_HOME shows them).
Prefect is imported only after that environment is set.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from sparse2dense.config import ConfigError, PipelineConfig, load_config
from sparse2dense.metrics import avg_metric_name

DEFAULT_CONFIG = "configs/toy.yaml"


def _default_config() -> Path:
    local = Path(DEFAULT_CONFIG)
    return local if local.is_file() else Path(__file__).resolve().parents[1] / DEFAULT_CONFIG


def prepare_environment(cfg: PipelineConfig) -> None:
    """Embedded defaults: Prefect state and MLflow under the runs directory, no hub access for toys."""
    runs = Path(cfg.runs_dir).resolve()
    runs.mkdir(parents=True, exist_ok=True)
    if not os.environ.get("PREFECT_API_URL"):
        os.environ.setdefault("PREFECT_HOME", str(runs / "prefect"))
        os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
        # No phoning home from an embedded server (and no network to do it with).
        os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
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


def cmd_run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config or _default_config(), args.set)
    prepare_environment(cfg)
    from flows.post_train import post_train

    summary = post_train(cfg, force_rerun=args.force)
    print_summary(summary)
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from sparse2dense.pipeline import plan_keys, plan_stages

    cfg = load_config(args.config, args.set)
    keys = plan_keys(cfg)
    print(f"config {args.config}: valid ({cfg.name})")
    for planned in plan_stages(cfg):
        needs = ", ".join(f"{r}<-{n}" for r, n in planned.upstream.items())
        print(f"  {planned.name:<22}{keys[planned.name]}  {needs}")
    return 0


def cmd_grade(args: argparse.Namespace) -> int:
    from sparse2dense import grader_pool
    from sparse2dense.grade_file import default_output, grade_file

    grader_pool.configure(workers=args.workers, limit_s=args.limit_s)
    grade_file(args.input, args.output or default_output(args.input), echo=sys.stdout)
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
    val.set_defaults(func=cmd_validate)
    grade = sub.add_parser("grade", help="grade a jsonl of {gold, pred} records; print totals per verdict")
    grade.add_argument("input", type=Path)
    grade.add_argument("--output", type=Path, help="graded records (default INPUT.graded.jsonl)")
    grade.add_argument("--limit-s", type=float, default=5.0, help="wall-clock limit per symbolic check")
    grade.add_argument(
        "--workers", type=int, default=None, help="grader worker processes (default min(4, cpus))"
    )
    grade.set_defaults(func=cmd_grade)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
