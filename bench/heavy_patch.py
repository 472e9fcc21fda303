"""A patch of known, tunable cost for benchmarks: ``depth`` tied ``width x width`` layers.

The hidden layers share one orthogonal weight matrix, so the file stays small (≈ width² floats)
while the cost grows linearly with depth — and, with the weights resident in cache, a single-row
batch is compute-bound rather than memory-bound. Orthogonal weights with tanh keep activations
bounded at any depth (no overflow, no denormal slow-down).
"""

from __future__ import annotations

import numpy as np
from onnx import helper, numpy_helper

from bench.onnx_patches import patch_graph_bytes
from service.patch_contract import PATCH_INPUT


def heavy_patch(f: int, k: int, width: int = 512, depth: int = 100, seed: int = 0) -> bytes:
    if min(f, width, depth) < 1 or k < 2:
        raise ValueError("need f, width, depth >= 1 and k >= 2")
    rng = np.random.default_rng(seed)
    w_in = (rng.standard_normal((f, width)) / np.sqrt(f)).astype(np.float32)
    w_hidden = np.linalg.qr(rng.standard_normal((width, width)))[0].astype(np.float32)
    w_out = (rng.standard_normal((width, k)) * 0.1).astype(np.float32)
    inits = [
        numpy_helper.from_array(a, n)
        for a, n in ((w_in, "w_in"), (w_hidden, "w_hidden"), (w_out, "w_out"))
    ]
    nodes = [helper.make_node("MatMul", [PATCH_INPUT, "w_in"], ["h0"])]
    for i in range(depth):
        nodes.append(helper.make_node("MatMul", [f"h{i}", "w_hidden"], [f"m{i}"]))
        nodes.append(helper.make_node("Tanh", [f"m{i}"], [f"h{i + 1}"]))
    nodes.append(helper.make_node("MatMul", [f"h{depth}", "w_out"], ["logits"]))
    return patch_graph_bytes(nodes, inits, "logits", f, k, "heavy_patch")
