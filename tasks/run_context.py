"""The state of one pipeline run: its MLflow parent run, the results so far, and the summary.

Builds each stage's request from the plan (spec, key, upstream results) for the fan-out
(`tasks/fanout.py`) to run, records what comes back, and at the end writes `summary.json`, the eval
table (Prefect table artifact, MLflow artifact) and a bar chart. A run of a sweep has a `label`
(`arm@seedN`): its stages' task runs carry it, and its files go under the flow run's directory.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run

from sparse2dense.config import PipelineConfig
from sparse2dense.graph import Stage, current
from sparse2dense.ledger import Ledger
from sparse2dense.pipeline import PlannedStage, plan_keys, plan_stages, stage_payload
from sparse2dense.services import embedded_tracking_uri
from sparse2dense.spec import StageSpec
from sparse2dense.store import StageResult, read_manifest, stage_dir
from tasks import tracking
from tasks.reporting import eval_rows, render_eval_plot, render_markdown_table
from tasks.stages import StageOutcome, StageRequest, Tracking


class PipelineRun:
    def __init__(
        self,
        cfg: PipelineConfig,
        force_rerun: list[str] | None = None,
        plan: list[PlannedStage] | None = None,
        parent_run_id: str | None = None,
        label: str | None = None,
    ) -> None:
        self.cfg, self.label = cfg, label
        self.errors: dict[str, str] = {}  # planned stage -> why it failed or did not run
        self.force = set(force_rerun or [])
        self.store = Path(cfg.store_dir).resolve()
        self.runs_dir = Path(cfg.runs_dir).resolve()
        self.plan = plan if plan is not None else plan_stages(cfg)
        self.keys = plan_keys(cfg, self.plan)
        self.results: dict[str, StageResult] = {}
        self.ledger = Ledger()
        self.summary: dict[str, Any] = {"stages": {}, "eval": {}, "labels": {}}
        self.started = time.monotonic()
        uri = cfg.tracking.tracking_uri or embedded_tracking_uri(self.runs_dir)
        self.client = tracking.connect(uri)
        experiment = cfg.tracking.experiment or cfg.name
        experiment_id = tracking.ensure_experiment(self.client, experiment, self.runs_dir / "mlartifacts")
        flow_run_id = str(flow_run.get_id() or "")
        parent = tracking.start_parent_run(
            self.client,
            experiment_id,
            name=f"{cfg.name}-{label or flow_run.get_name() or 'local'}",
            tags={"prefect.flow_run_id": flow_run_id, "s2d.config": cfg.name}
            | ({"mlflow.parentRunId": parent_run_id} if parent_run_id else {}),
        )
        tracking.log_params(self.client, parent, tracking.flatten_params(cfg.model_dump(mode="json")))
        self.tracking = Tracking(tracking_uri=uri, experiment_id=experiment_id, parent_run_id=parent)
        self.run_dir = self.runs_dir / "flows" / (flow_run_id or parent) / (label or "")
        self.run_dir.mkdir(parents=True, exist_ok=True)

    def task_name(self, planned: PlannedStage) -> str:
        return f"{planned.name} [{self.label}]" if self.label else planned.name

    def forced(self, planned: PlannedStage) -> bool:
        return planned.name in self.force or str(planned.stage) in self.force

    def request(self, planned: PlannedStage) -> StageRequest:
        """The stage's request, from the results of the stages it reads (which must be recorded)."""
        config, semantic = stage_payload(self.cfg, planned.stage, planned.model)
        key = self.keys[planned.name]
        spec = StageSpec(
            stage=planned.stage,
            name=planned.name,
            key=key,
            config=config,
            semantic_config=semantic,
            # Without the upstream MLflow run ids: spec.json is one of the stage's files, and a recompute
            # (a resumed one too) that reproduces the same upstream content must give the same digest.
            upstream={
                role: self.results[name].model_copy(update={"mlflow_run_id": None})
                for role, name in planned.upstream.items()
            },
            output_dir=str(stage_dir(self.store, str(planned.stage), key)),
            seed=self.cfg.seed,
        )
        return StageRequest(spec=spec, store=str(self.store), tracking=self.tracking)

    def record(self, planned: PlannedStage, outcome: StageOutcome) -> None:
        result = outcome.result.model_copy(update={"name": planned.name})
        self.results[planned.name] = result
        self.summary["stages"][planned.name] = {
            "key": self.keys[planned.name],
            "status": outcome.status,
            "wall_s": round(outcome.wall_s, 2),
            "metrics": result.metrics,
            "path": result.path,
            "mlflow_run_id": result.mlflow_run_id,
            # where the run that produced the result picked up after an interruption, else None
            "resumed_from_step": read_manifest(Path(result.path)).get("resumed_from_step"),
        }
        if result.labeled_examples:
            self.ledger.add(planned.name, self._label_split(planned), result.labeled_examples)
        if planned.stage == Stage.EVAL:
            results = json.loads((Path(result.path) / "results.json").read_text())
            self.summary["eval"][planned.name.removeprefix("eval/")] = results["benchmarks"]
        prefixed = {f"{planned.name}/{k}": v for k, v in result.metrics.items()}
        tracking.log_metrics(self.client, self.tracking.parent_run_id, prefixed)
        get_run_logger().info(
            "stage %s: %s in %.1fs", self.task_name(planned), outcome.status, outcome.wall_s
        )

    def fail(self, planned: PlannedStage, why: str) -> None:
        self.errors[planned.name] = why
        self.summary["stages"][planned.name] = {
            "key": self.keys[planned.name],
            "status": "failed",
            "error": why,
        }

    @property
    def failed(self) -> bool:
        return bool(self.errors)

    def _label_split(self, planned: PlannedStage) -> str:
        """The label split a stage's section says it reads (the GRPO stages' `labels`)."""
        section = getattr(self.cfg, current().stage(planned.stage).section)
        return getattr(section, "labels", "unknown")

    def finish(self) -> dict[str, Any]:
        """Write the summary, eval table and chart, whether or not a stage failed."""
        ok = not self.failed
        order = [p.name for p in self.plan]
        self.summary["stages"] = {n: self.summary["stages"][n] for n in order if n in self.summary["stages"]}
        self.summary["eval"] = dict(
            sorted(self.summary["eval"].items(), key=lambda kv: order.index(f"eval/{kv[0]}"))
        )
        self.summary["status"] = "completed" if ok else "failed"
        self.summary["errors"] = self.errors
        self.summary["wall_s"] = round(time.monotonic() - self.started, 2)
        self.summary["labels"] = self.ledger.by_stage() | {"total": self.ledger.total}
        self.summary["ledger"] = [e.model_dump() for e in self.ledger.entries]
        self.summary["flow_run_id"] = str(flow_run.get_id() or "")
        self.summary["mlflow"] = {
            "tracking_uri": self.tracking.tracking_uri,
            "parent_run_id": self.tracking.parent_run_id,
        }
        summary_path = self.run_dir / "summary.json"
        summary_path.write_text(json.dumps(self.summary, indent=2))
        rows = eval_rows(self.summary["eval"])
        if rows:
            table = render_markdown_table(rows)
            (self.run_dir / "eval_table.md").write_text(table)
            plot = render_eval_plot(rows, self.run_dir / "eval.png")
            create_table_artifact(rows, key="eval-results", description="Evaluation per model and benchmark")
            create_markdown_artifact(table, key="eval-summary", description="Evaluation summary")
            self.client.log_artifact(self.tracking.parent_run_id, str(self.run_dir / "eval_table.md"))
            self.client.log_artifact(self.tracking.parent_run_id, str(plot))
        self.client.log_artifact(self.tracking.parent_run_id, str(summary_path))
        tracking.log_metrics(
            self.client,
            self.tracking.parent_run_id,
            {f"labels/{name}": count for name, count in self.summary["labels"].items()},
        )
        tracking.end_run(self.client, self.tracking.parent_run_id, ok=ok)
        self.summary["summary_path"] = str(summary_path)
        return self.summary
