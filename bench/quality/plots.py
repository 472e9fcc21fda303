"""One PNG per results table: every (target, bias) group's test accuracy under each method.

A strip of dots per method works for COMPAS's four groups and Colored MNIST's hundred alike;
the bar is the average-group accuracy and the red tick the worst group, the two numbers the
tables report (both means over seeds, so the red tick can sit below every dot: each seed's
worst group is another one).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

LABELS = {"raw": "raw", "eraser": "Eraser α=1", "eraser_tuned": "Eraser, tuned α",
          "linearpost_blind": "LinearPost blind", "fairlearn_to": "ThresholdOptimizer*",
          "error_parity": "error-parity*"}  # fmt: skip


def plot_setting(title: str, rows: dict[str, dict[str, Any]], path: Path) -> Path:
    """Vanilla and unfair deployed models, full calibration set, means over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    variants = [v for v in ("vanilla", "unfair") if f"{v}.raw" in rows]
    fig = Figure(figsize=(max(5.6, 4.2 * len(variants)), 3.9), dpi=90)
    axes = fig.subplots(1, len(variants), sharey=True, squeeze=False)[0]
    rng = np.random.default_rng(0)
    for ax, variant in zip(axes, variants, strict=True):
        methods = [m for m in LABELS if f"{variant}.{m}" in rows]
        for i, method in enumerate(methods):
            row = rows[f"{variant}.{method}"]
            acc = np.array(list(row["groups"].values()))
            ax.scatter(i + rng.uniform(-0.18, 0.18, len(acc)), acc, s=10, alpha=0.6)
            ax.hlines(row["avg"], i - 0.3, i + 0.3, color="black", linewidth=2)
            ax.hlines(row["worst"], i - 0.3, i + 0.3, color="tab:red", linewidth=1.5)
        ax.set_xticks(range(len(methods)), [LABELS[m] for m in methods], rotation=20, fontsize=8)
        ax.set_title(f"{variant} deployed model", fontsize=9)
        ax.set_ylim(-2, 102)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("group accuracy on the test split (%)")
    fig.suptitle(
        f"{title}\nblack: average-group, red: worst-group accuracy (means over seeds)", fontsize=9
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
