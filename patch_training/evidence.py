"""What the gate decides on: the served artifact's raw and fair decisions on rows that decided
nothing, their group metrics, and bootstrap intervals for every metric and raw → fair change."""

from __future__ import annotations

import numpy as np

from patch_training.bootstrap import (
    METRICS,
    Cells,
    interval,
    metric_intervals,
    metrics_of,
    observed_accuracies,
    resampled_accuracies,
)
from service.jobs.spec import Evidence
from service.patch_contract import PATCH_INPUT
from service.runtime.patch_session import PatchSession
from service.settings import ModelConfig

STAGES = ("raw", "fair")
BATCH = 1024  # rows per ONNX Runtime call


def paired_evidence(
    y: np.ndarray,
    b: np.ndarray,
    raw_pred: np.ndarray,
    fair_pred: np.ndarray,
    draws: int,
    confidence: float,
    seed: int,
) -> Evidence:
    """Raw and fair resampled together within (target, bias) cells (``bootstrap``)."""
    cells = Cells.of(y, b)
    correct = {"raw": raw_pred == y, "fair": fair_pred == y}
    observed = {s: observed_accuracies(cells, correct[s]) for s in STAGES}
    resampled = resampled_accuracies(cells, correct, draws, seed)
    stage = {s: metric_intervals(cells, observed[s], resampled[s], confidence) for s in STAGES}
    point = {s: metrics_of(observed[s], cells) for s in STAGES}
    dist = {s: metrics_of(resampled[s], cells) for s in STAGES}
    change = {
        m: interval(
            float(point["fair"][m] - point["raw"][m]),
            dist["fair"][m] - dist["raw"][m],
            confidence,
            bounds=(-1, 1),
        )
        for m in METRICS
    }
    groups = {
        s: {
            name: interval(float(observed[s][c]), resampled[s][:, c], confidence)
            for c, name in enumerate(cells.names)
        }
        for s in STAGES
    }
    sizes = dict(zip(cells.names, cells.sizes.tolist(), strict=True))
    return Evidence(
        rows=len(y),
        confidence=confidence,
        draws=draws,
        raw=stage["raw"],
        fair=stage["fair"],
        change=change,
        groups=groups,
        group_rows=sizes,
        comparable_classes=len(cells.comparable),
    )


def served_log_bias(blob: bytes, x: np.ndarray, model: ModelConfig) -> np.ndarray:
    """log G(x) as the gateway would compute it: the exported graph in ONNX Runtime, through
    the gateway's own ``PatchSession`` (which also checks its shape and finiteness)."""
    session = PatchSession(
        blob,
        input_name=PATCH_INPUT,
        input_shape=list(model.input.shape),
        num_classes=model.num_classes,
        providers=["CPUExecutionProvider"],
        label="verdict",
    )
    return np.concatenate([session.run(x[i : i + BATCH]) for i in range(0, len(x), BATCH)])
