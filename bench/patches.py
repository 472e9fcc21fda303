"""The patches the scenarios activate: a realistic small one, and one of calibrated cost.

The overhead scenarios need what a real tabular patch costs (tens of µs). The concurrency
scenario needs a patch whose cost is known — ≈10 ms at the batch it is sent — so that whether
the gateway overlaps it with the upstream shows in the end-to-end latency.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from bench.common import class_names
from bench.heavy_patch import heavy_patch

HEAVY_WIDTH = 512  # fits in L2 with room to spare: a batch-1 layer is compute-bound
FIRST_DEPTH = 100  # cost is linear in depth, so one measurement predicts the rest


@dataclass(frozen=True)
class HeavyPatch:
    """A calibrated ``heavy_patch`` and what it was calibrated to: the report quotes it."""

    blob: bytes
    width: int
    depth: int
    batch: int
    patch_ms: float  # ORT median at ``batch`` rows, with the gateway's session options

    def meta(self) -> dict[str, float]:
        return {"width": self.width, "depth": self.depth, "batch": self.batch,
                "bytes": len(self.blob), "mb": round(len(self.blob) / 1e6, 3),
                "patch_ms": round(self.patch_ms, 3)}  # fmt: skip


def small_patch(x: np.ndarray, y: np.ndarray) -> bytes:
    """A realistic tabular patch: standardisation + one hidden layer of 32, fitted on the
    vendored COMPAS calibration rows (labels as targets: its values do not matter here)."""
    from bench.onnx_patches import fit_mlp_patch

    return fit_mlp_patch(x, y, hidden=(32,), seed=0, max_iter=200)


def patch_median_ms(blob: bytes, batch: np.ndarray, runs: int) -> float:
    """Median ORT latency with the gateway's session options (one intra-op thread)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(blob, sess_options=opts, providers=["CPUExecutionProvider"])
    for _ in range(5):
        session.run(None, {"x": batch})
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, {"x": batch})
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e3


def scaled_depth(depth: int, measured_ms: float, target_ms: float) -> int:
    """The depth that should cost ``target_ms``, given what ``depth`` cost: cost ∝ depth."""
    return max(1, round(depth * target_ms / measured_ms))


def calibrate_heavy(batch: np.ndarray, target_ms: float, tolerance: float = 0.03) -> HeavyPatch:
    """``heavy_patch`` whose median at this batch is within ``tolerance`` of ``target_ms``:
    measure, rescale the depth linearly, repeat (≤ 4 steps; the first is a short probe)."""
    f, k, depth = batch.shape[1], len(class_names()), FIRST_DEPTH
    for _ in range(4):
        blob = heavy_patch(f, k, HEAVY_WIDTH, depth)
        ms = patch_median_ms(blob, batch, runs=50)
        print(f"  heavy patch depth {depth}: {ms:.2f} ms at batch {len(batch)}", flush=True)
        if abs(ms - target_ms) <= tolerance * target_ms:
            break
        depth = scaled_depth(depth, ms, target_ms)
    blob = heavy_patch(f, k, HEAVY_WIDTH, depth)
    return HeavyPatch(blob, HEAVY_WIDTH, depth, len(batch), patch_median_ms(blob, batch, 100))
