"""Thin Prefect tasks: cache policy, retries, launching a stage program, its MLflow run."""
