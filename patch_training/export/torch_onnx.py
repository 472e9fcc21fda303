"""Export a trained torch patch net to the ONNX patch contract and prove the export is faithful.

Contract (``service.patch_contract``): one input ``x`` float32 [N, *input_shape] with a dynamic
batch axis, one output ``log_bias`` float32 [N, K], each row a log-softmax.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from patch_training.nets.fit import predict_log
from service.patch_contract import PATCH_INPUT, PATCH_OUTPUT

OPSET = 17
MAX_IR_VERSION = 8  # onnxruntime >= 1.14 reads it; same cap as the hand-built patches


class ParityError(ValueError):
    """The ONNX graph does not compute what the torch net computes."""


def trace_to_onnx(net: nn.Module, dummy: torch.Tensor, output_name: str = PATCH_OUTPUT) -> bytes:
    """Input ``x``, one output, dynamic batch axis, opset 17. The TorchScript exporter, not
    dynamo: in torch 2.13 dynamo fails on these nets and takes seconds where tracing takes
    ~0.1 s. Its deprecation notices are expected here."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="You are using the legacy TorchScript", category=DeprecationWarning
        )
        warnings.filterwarnings(
            "ignore", message="The feature will be removed", category=DeprecationWarning
        )
        torch.onnx.export(
            net,
            (dummy,),
            buf,
            dynamo=False,
            opset_version=OPSET,
            input_names=[PATCH_INPUT],
            output_names=[output_name],
            dynamic_axes={PATCH_INPUT: {0: "N"}, output_name: {0: "N"}},
        )
    return buf.getvalue()


def export_patch(net: nn.Module, input_shape: Sequence[int]) -> bytes:
    """Serialise ``net`` (switched to eval mode: BatchNorm must use its running statistics)
    as a checked ONNX patch. The trace input has batch 2 so no size-1 batch gets baked in."""
    net.eval()
    device = next(iter(net.parameters()), torch.empty(0)).device
    dummy = torch.zeros((2, *(int(d) for d in input_shape)), dtype=torch.float32, device=device)
    model = onnx.load_from_string(trace_to_onnx(net, dummy))
    model.ir_version = min(model.ir_version, MAX_IR_VERSION)
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def check_parity(
    net: nn.Module, blob: bytes, x: np.ndarray, atol: float = 1e-4, rtol: float = 1e-4
) -> float:
    """Max |torch − onnxruntime| over ``x`` run as one batch and as a batch of 1; raises unless
    every output is within ``atol + rtol·|torch|`` (numpy's ``allclose`` rule).

    Both batch sizes, because a graph whose batch axis was frozen at trace time, or an op that
    mixes rows, passes at one size and fails at the other. The relative part because float32
    kernels (a convolution's summation order) err in proportion to the value: a tempered f_B
    with T ≪ 1 answers log-probabilities in the hundreds, and an absolute 1e-4 refused a CNN
    patch whose outputs agreed to 1e-6 relative. An error of δ in log G moves the served
    probabilities by a factor of at most e^{αδ}.
    """
    x = np.asarray(x, dtype=np.float32)
    sess = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    diff, excess = 0.0, 0.0
    for batch in (x[:1], x):
        onnx_out = sess.run([PATCH_OUTPUT], {PATCH_INPUT: batch})[0]
        torch_out = predict_log(net, batch)
        if onnx_out.shape != torch_out.shape:
            raise ParityError(f"ONNX output {onnx_out.shape} != torch output {torch_out.shape}")
        gap = np.abs(onnx_out.astype(np.float64) - torch_out)
        diff = max(diff, float(gap.max()))
        excess = max(excess, float((gap - atol - rtol * np.abs(torch_out)).max()))
    if not excess <= 0.0:  # also catches NaN
        raise ParityError(
            f"ONNX and torch outputs differ by {diff:.3g}, beyond atol {atol:g} + "
            f"rtol {rtol:g}·|out|"
        )
    return diff
