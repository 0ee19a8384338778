"""sparse2dense: post-train a small student with scarce labels by the sparse-to-dense rule.

Pure library: config schema, data, grading, losses, generation and the stage programs. It never
imports Prefect; the orchestration lives in `tasks/` and `flows/`.
"""

__version__ = "0.1.0"
