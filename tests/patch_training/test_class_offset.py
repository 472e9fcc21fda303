"""The class offset chosen with α: label-free, from the tuning rows only, baked into the graph."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from patch_training.alpha import AlphaPoint, alpha_curve, choose_alpha, share_offset
from patch_training.export.torch_onnx import check_parity, export_patch
from patch_training.metrics import GroupReport
from patch_training.nets import ShiftedPatch, TabularMLP, TabularPreprocess, predict_log
from service.eraser_math import fair_log_probs
from service.jobs.spec import GateConfig, TrainingJobSpec
from service.patch_contract import PATCH_INPUT, PATCH_OUTPUT

GATE = GateConfig(bootstrap_draws=100)


def _rows(n: int = 400, k: int = 2, seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    log_m = np.log(rng.dirichlet(np.ones(k), n))
    log_g = np.log(rng.dirichlet(np.ones(k) * 2, n)) + np.log(np.arange(1, k + 1))[None, :]
    return log_m, log_g, rng.integers(0, k, n), rng.choice(["a", "b"], n)


@pytest.mark.parametrize("k", [2, 10])
def test_offset_keeps_the_raw_models_class_shares(k: int) -> None:
    log_m, log_g, _, _ = _rows(2000, k)
    delta = share_offset(log_m, log_g, 1.5)
    raw = np.bincount(log_m.argmax(1), minlength=k)
    fair = np.bincount((log_m - 1.5 * log_g + delta).argmax(1), minlength=k)
    assert np.array_equal(fair, raw)
    assert not np.array_equal(np.bincount((log_m - 1.5 * log_g).argmax(1), minlength=k), raw)
    assert abs(delta.mean()) < 1e-12
    assert np.array_equal(share_offset(log_m, log_g, 0.0), np.zeros(k))


def test_offset_uses_no_labels() -> None:
    log_m, log_g, y, b = _rows()
    curve = alpha_curve(log_m, log_g, y, b, [0.5], GATE, class_offset="raw_shares")
    other = alpha_curve(log_m, log_g, 1 - y, b, [0.5], GATE, class_offset="raw_shares")
    assert [p.offset for p in curve] == [p.offset for p in other]


def test_curve_modes_raw_shares_none_and_auto() -> None:
    log_m, log_g, y, b = _rows()
    plain = alpha_curve(log_m, log_g, y, b, [0.5], GATE, class_offset="none")
    shares = alpha_curve(log_m, log_g, y, b, [0.5], GATE, class_offset="raw_shares")
    both = alpha_curve(log_m, log_g, y, b, [0.5], GATE, class_offset="auto")
    assert [(p.alpha, p.offset is None) for p in plain] == [(0, True), (0.5, True), (1, True)]
    assert [(p.alpha, p.offset is None) for p in shares] == [(0, True), (0.5, False), (1, False)]
    assert len(both) == 5 and both[0].offset is None  # raw once, then each α with and without
    for p in shares[1:]:  # every offset point predicts the raw share of each class
        pred = np.argmax(fair_log_probs(log_m, [log_g], [p.alpha]) + np.array(p.offset), 1)
        assert np.array_equal(np.bincount(pred, minlength=2), np.bincount(log_m.argmax(1)))


def _point(alpha: float, worst: float, eo: float, offset: bool) -> AlphaPoint:
    report = GroupReport(0.7, worst, eo, 0.8, {}, 1)
    return AlphaPoint(alpha, report, {}, (-0.1, 0.1) if offset else None)


def test_auto_caps_eo_at_the_offset_curves_alpha_one() -> None:
    curve = [
        _point(0.0, 0.40, 0.30, False),
        _point(1.0, 0.70, 0.20, False),  # best worst-group, but above the offset curve's cap
        _point(1.0, 0.55, 0.10, True),
        _point(1.5, 0.60, 0.08, True),
        _point(1.5, 0.58, 0.09, False),
    ]
    choice = choose_alpha(curve, GateConfig())
    assert (choice.alpha, choice.offset) == (1.5, (-0.1, 0.1))
    assert choice.chosen is curve[3].report
    assert np.allclose(choice.patch_shift, np.array([-0.1, 0.1]) / 1.5)
    plain = choose_alpha([curve[0], curve[1], curve[4]], GateConfig())
    assert (plain.alpha, plain.offset, plain.patch_shift) == (1.0, None, None)


def test_class_offset_defaults_to_auto() -> None:
    spec = TrainingJobSpec(model="m", target="y", bias="b")
    assert spec.class_offset == "auto"


def test_exported_shifted_patch_serves_the_offset_chosen_with_alpha() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 5)).astype(np.float32)
    torch.manual_seed(0)
    net = TabularMLP(TabularPreprocess(x, 12), [8], 2).eval()
    delta, alpha = np.array([-0.3, 0.3]), 1.25
    served = ShiftedPatch(net, (delta / alpha).tolist())
    blob = export_patch(served, (5,))
    assert check_parity(served, blob, x) <= 1e-4
    sess = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    log_bias = sess.run([PATCH_OUTPUT], {PATCH_INPUT: x})[0].astype(np.float64)
    assert np.allclose(np.logaddexp.reduce(log_bias, axis=1), 0, atol=1e-5)
    log_m = np.log(rng.dirichlet([1, 1], 64))
    gateway = fair_log_probs(log_m, [log_bias], [alpha])
    wanted = fair_log_probs(log_m, [predict_log(net, x).astype(np.float64)], [alpha]) + delta
    wanted -= np.logaddexp.reduce(wanted, axis=1, keepdims=True)
    assert np.allclose(gateway, wanted, atol=1e-4)
