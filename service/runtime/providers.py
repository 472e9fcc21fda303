"""Where a patch runs: the CUDA execution provider only when it is there, allowed, and pays.

A CUDA run pays a fixed price per call — kernel launches, a host-to-device copy of the input and
a device-to-host copy of ``log_bias`` — that a tiny tabular MLP never earns back: the issue's
reference measurement put an MLP at batch 1 at 16 µs on the CPU provider and 63 µs on CUDA.
Convolutional image patches (the small CNN, ResNet-18) reuse every weight at every pixel, so
their cost grows with the input's element count and the GPU wins by a wide margin there.

The rule is therefore on the per-instance input's element count, which the manifest declares and
the gateway checks at load time (no graph parsing: the gateway ships without ``onnx``): a patch
whose instance has fewer than ``runtime.gpu_min_input_elements`` elements stays on the CPU
provider even on a GPU machine. The default, 256, keeps tabular inputs (tens to a couple of
hundred features) on the CPU and sends MNIST-sized (784) and larger images to CUDA.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import onnxruntime as ort

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def heavy_enough(input_shape: Sequence[int], min_elements: int) -> bool:
    """Whether one instance of ``input_shape`` is big enough to pay for a CUDA call."""
    return math.prod(int(d) for d in input_shape) >= min_elements


def place(
    *,
    cuda_available: bool,
    use_gpu: bool,
    allow_gpu: bool,
    input_shape: Sequence[int],
    min_elements: int,
) -> list[str]:
    """The provider list for one patch (pure: the policy, without asking ONNX Runtime)."""
    if cuda_available and use_gpu and allow_gpu and heavy_enough(input_shape, min_elements):
        return [CUDA, CPU]
    return [CPU]


def choose_providers(
    use_gpu: bool, allow_gpu: bool, *, input_shape: Sequence[int], min_elements: int
) -> list[str]:
    """``place`` with CUDA's availability asked of the installed ONNX Runtime."""
    return place(
        cuda_available=CUDA in ort.get_available_providers(),
        use_gpu=use_gpu,
        allow_gpu=allow_gpu,
        input_shape=input_shape,
        min_elements=min_elements,
    )
