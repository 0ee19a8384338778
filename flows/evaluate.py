"""The `evaluate` flow: score one model on the configured eval sets, through the cached stages.

`model_path` (a local directory such as a stage's `model/` output, a hub id, or a registered
student's `models:/NAME/VERSION`) replaces the configured `role` model; without it the configured
model is evaluated (a toy model after its pre-training stage). A path that does not exist is
refused before anything runs. Results land in `summary.json`, MLflow and the Prefect
`eval-results` table.
"""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow

from flows.post_train import complete
from sparse2dense.config import PipelineConfig
from sparse2dense.pipeline import plan_evaluation
from sparse2dense.sections import ModelSpec
from tasks.registry import resolve_model_source
from tasks.run_context import PipelineRun


@flow(name="evaluate", log_prints=True)
def evaluate(
    config: PipelineConfig,
    role: Literal["teacher", "student"] = "student",
    model_path: str | None = None,
    force_rerun: list[str] | None = None,
) -> dict[str, Any]:
    """Evaluate one model on the config's eval sets.

    Args:
        config: The pipeline config whose data and eval sections are used.
        role: Which configured model the evaluated one stands in for (its eval stage name).
        model_path: A model directory, a hub id, or a registered student (models:/NAME/VERSION); none: the configured model.
        force_rerun: Stages or stage kinds to recompute even when cached.
    """
    if model_path:
        source = resolve_model_source(model_path, config)
        config = config.model_copy(update={role: ModelSpec(name_or_path=source)})
    return complete(PipelineRun(config, force_rerun, plan_evaluation(config, role)), config)
