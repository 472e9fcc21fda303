"""The benchmark's tunable patch honours the patch contract at any depth."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from bench.heavy_patch import heavy_patch


def test_heavy_patch_is_valid_deterministic_small_and_batch_dynamic() -> None:
    blob = heavy_patch(7, 2, width=64, depth=300, seed=5)
    assert blob == heavy_patch(7, 2, width=64, depth=300, seed=5)
    assert len(blob) < 64 * 64 * 4 + 20_000 * 2  # tied weights: one hidden matrix
    session = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    for n in (1, 33):
        (out,) = session.run(None, {"x": np.full((n, 7), 3.0, np.float32)})
        assert out.shape == (n, 2) and np.isfinite(out).all()
        np.testing.assert_allclose(np.exp(out).sum(axis=1), 1.0, atol=1e-5)
