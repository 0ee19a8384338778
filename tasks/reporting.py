"""Tables and pictures of results a person compares: the eval table and its bar chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sparse2dense.metrics import avg_metric_name


def eval_rows(evals: dict[str, dict[str, dict[str, float]]]) -> list[dict[str, Any]]:
    """One row per (model, benchmark) with avg@k +- stderr, its bootstrap CI, pass@k and maj@k."""
    rows = []
    for model, benches in evals.items():
        for bench, m in benches.items():
            avg_key = avg_metric_name(m)
            k = avg_key.split("@")[1]
            rows.append(
                {
                    "model": model,
                    "benchmark": bench,
                    f"avg@{k}": round(m[avg_key], 4),
                    "stderr": round(m[f"{avg_key}_stderr"], 4),
                    "ci95": f"[{m[f'{avg_key}_ci95_low']:.3f}, {m[f'{avg_key}_ci95_high']:.3f}]",
                    f"pass@{k}": round(m[f"pass@{k}"], 4),
                    f"maj@{k}": round(m[f"maj@{k}"], 4),
                    "problems": int(m["num_problems"]),
                }
            )
    return rows


def render_markdown_table(rows: list[dict[str, Any]]) -> str:
    headers = list(rows[0])
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(r[h]) for h in headers) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def render_eval_plot(rows: list[dict[str, Any]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    avg_key = next(k for k in rows[0] if k.startswith("avg@"))
    labels = [f"{r['model']}\n{r['benchmark']}" for r in rows]
    fig, ax = plt.subplots(figsize=(max(4, 1.4 * len(rows)), 3.5))
    ax.bar(labels, [r[avg_key] for r in rows], yerr=[1.96 * r["stderr"] for r in rows], capsize=4)
    ax.set_ylabel(f"{avg_key} (95% CI)")
    ax.set_ylim(0, 1)
    ax.set_title("Evaluation")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
