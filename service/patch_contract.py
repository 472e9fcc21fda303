"""The ONNX patch contract, defined once for the exporters (training) and the loader (gateway).

A patch takes one float32 input ``PATCH_INPUT`` [N, *input_shape] with a dynamic batch axis and
answers ``PATCH_OUTPUT`` float32 [N, K] whose rows are log-normalised: log G(x). Whatever
turns a request row into the patch's input (scaling, one-hot vocabularies, image
normalisation) is inside the graph, never in gateway code.
"""

from __future__ import annotations

from typing import Final

PATCH_INPUT: Final = "x"
PATCH_OUTPUT: Final = "log_bias"
LOG_NORM_TOLERANCE: Final = 1e-3  # |log Σ exp(row)| a loaded patch may show
