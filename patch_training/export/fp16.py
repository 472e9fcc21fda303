"""The fp16 export option: float16 weights inside the patch, float32 ``x`` and ``log_bias`` outside.

Half the bytes to load and, on a GPU, half the memory traffic and tensor-core arithmetic for the
image patches. The patch contract does not change (``keep_io_types``: casts at the graph's edges),
so the gateway serves an fp16 patch like any other. Rounding weights (and, on CUDA, activations)
to float16 changes the answers a little, and a weight beyond float16's range would change them a
lot, so an fp16 export is only registered if its ``log_bias`` matches the float32 export's
within ``FP16_ATOL`` on the calibration rows (``check_fp16_parity``); otherwise the job fails
with a ``ParityError`` rather than serving a different patch than the one it judged.

The conversion is onnxconverter-common's float16 converter (the ONNX project's tool for this).
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnxruntime as ort
from onnxconverter_common import float16

from patch_training.export.torch_onnx import MAX_IR_VERSION, ParityError
from service.patch_contract import PATCH_INPUT, PATCH_OUTPUT

# Largest |log G16 − log G32| allowed, in nats, on any calibration row. The gate judges the
# exported graph itself afterwards, so this bounds drift, not quality: 0.02 nats moves a
# probability by at most 2 % of itself. Float16's 11-bit mantissa gives ~1e-3 relative error
# per rounding; the small CNN and ResNet-18 exports stay near 1e-4 on the CPU provider.
FP16_ATOL = 0.02
_BATCH = 256  # rows per parity run: bounded memory for image rows


def to_fp16(blob: bytes) -> bytes:
    """The float32 patch ``blob`` with float16 initialisers and arithmetic, float32 I/O.

    The converter warns for every weight it clamps into float16's range (below 1e-7 in
    magnitude, above 1e4); the parity check judges the result, so those warnings are dropped.
    """
    model = onnx.load_from_string(blob)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="the float32 number", category=UserWarning)
        half = float16.convert_float_to_float16(model, keep_io_types=True)
    half.ir_version = min(half.ir_version, MAX_IR_VERSION)
    onnx.checker.check_model(half, full_check=True)
    return half.SerializeToString()


def _log_bias(session: ort.InferenceSession, x: np.ndarray) -> np.ndarray:
    return np.concatenate(
        [
            session.run([PATCH_OUTPUT], {PATCH_INPUT: x[i : i + _BATCH]})[0]
            for i in range(0, len(x), _BATCH)
        ]
    )


def check_fp16_parity(
    fp32_blob: bytes,
    fp16_blob: bytes,
    x: np.ndarray,
    atol: float = FP16_ATOL,
    providers: list[str] | None = None,
) -> float:
    """Max |log_bias(fp16) − log_bias(fp32)| over the rows ``x``; ``ParityError`` above ``atol``.

    Both graphs run in the same ONNX Runtime provider (CPU unless ``providers`` says otherwise:
    the CPU provider computes unsupported float16 nodes in float32, so on CUDA, where the
    arithmetic is float16 too, the GPU benchmark measures the same check again)."""
    x = np.asarray(x, dtype=np.float32)
    if len(x) == 0:
        raise ParityError("no calibration rows to check the fp16 export on")
    providers = providers or ["CPUExecutionProvider"]
    outs = []
    for blob in (fp32_blob, fp16_blob):
        session = ort.InferenceSession(blob, providers=providers)
        outs.append(_log_bias(session, x))
    full, half = outs
    if half.dtype != np.float32 or half.shape != full.shape:
        raise ParityError(
            f"fp16 export answers {half.dtype} {half.shape}, not float32 {full.shape}"
        )
    diff = float(np.abs(half - full).max())
    if not diff <= atol:  # also catches NaN and inf (a weight clamped or overflowed)
        raise ParityError(f"fp16 export differs from the fp32 export by {diff:.3g} > {atol:g}")
    return diff


def export_fp16(fp32_blob: bytes, x: np.ndarray, atol: float = FP16_ATOL) -> tuple[bytes, float]:
    """The fp16 patch and its parity with ``fp32_blob`` on the rows ``x``, or ``ParityError``."""
    half = to_fp16(fp32_blob)
    return half, check_fp16_parity(fp32_blob, half, x, atol)
