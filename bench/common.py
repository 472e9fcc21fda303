"""What every benchmark module agrees on: the model, the credentials, the bodies clients send.

One place, so the load generator, the processes it targets and the report cannot drift apart
(a gateway started with one API key and measured with another would answer 401s, not latency).
"""

from __future__ import annotations

import numpy as np
import orjson

from deploy.local.processes import ROOT

MODEL = "compas"
PREFIX = "eraser-bench"  # the bench's own Redis key prefix: cleared before and after a run
V2_INFER = f"/v2/models/{MODEL}/infer"
KEYS = {"ERASER_PREDICT_API_KEY": "bench-predict-key", "ERASER_ADMIN_API_KEY": "bench-admin-key"}
PREDICT_HEADERS = {
    "Authorization": f"Bearer {KEYS['ERASER_PREDICT_API_KEY']}",
    "Content-Type": "application/json",
}
ADMIN_HEADERS = {"Authorization": f"Bearer {KEYS['ERASER_ADMIN_API_KEY']}"}
RESULTS = ROOT / "bench" / "results" / "perf.json"
MARKDOWN = ROOT / "BENCHMARKS.md"


def v2_body(rows: np.ndarray) -> bytes:
    """The OIP v2 request a client sends to the upstream, and unchanged to the gateway."""
    tensor = {"name": "x", "shape": list(rows.shape), "datatype": "FP32",
              "data": rows.reshape(-1).tolist()}  # fmt: skip
    return orjson.dumps({"inputs": [tensor]})


def predict_body(rows: np.ndarray) -> bytes:
    """The same rows as a ``/predict`` request (the gateway's own, non-OIP route)."""
    return orjson.dumps({"model": MODEL, "instances": rows.tolist()})


def class_names() -> list[str]:
    """The stand-in's classes: a patch manifest must name them, in the model's order."""
    from blackbox.model import CLASSES

    return list(CLASSES)
