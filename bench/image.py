"""The image scenario's pieces: a small CNN as the deployed model and as its patch, and the
three ways a client sends one 1×3×64×64 FP32 image (JSON, binary tensor data, gRPC).

Both networks have ``patch_training.nets.vision.SmallCNN``'s layout (three 3×3 conv + ReLU
blocks, 2× max-pool after the first two, global average pool, linear head; BatchNorm folded
away) and are written directly with ``onnx.helper``, so the benchmark builds them in
milliseconds without PyTorch. Their weights are seeded random (He initialisation), not
trained: a latency benchmark needs the cost of the graph, which does not depend on what the
weights learned, and the answers' values are not what is measured.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import orjson
from onnx import TensorProto, helper, numpy_helper

from bench.common import v2_body
from service.patch_contract import PATCH_INPUT, PATCH_OUTPUT

IMAGE_MODEL = "image"  # the stand-in's model and the gateway's JSON-upstream model
IMAGE_MODEL_BINARY = "image-bin"  # the gateway's model calling the same upstream with binary data
IMAGE_SHAPE = (3, 64, 64)
IMAGE_CLASSES = ("negative", "positive")
WIDTHS = (16, 32, 64)  # SmallCNN's defaults
HEADER_LENGTH = "Inference-Header-Content-Length"
MODES = ("json", "binary", "grpc")


def small_cnn(
    seed: int,
    log_softmax: bool,
    shape: tuple[int, int, int] = IMAGE_SHAPE,
    k: int = len(IMAGE_CLASSES),
) -> bytes:
    """SmallCNN as ONNX: input ``x`` [N, *shape], output [N, k]; logits (a deployed model, as
    ``blackbox.onnx_model`` serves) or, with ``log_softmax``, ``log_bias`` (a patch)."""
    rng = np.random.default_rng(seed)
    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []
    cur, c_in = PATCH_INPUT, shape[0]
    for i, c_out in enumerate(WIDTHS):
        w = rng.standard_normal((c_out, c_in, 3, 3)) * np.sqrt(2.0 / (c_in * 9))
        inits += [numpy_helper.from_array(w.astype(np.float32), f"conv{i}.w"),
                  numpy_helper.from_array(np.zeros(c_out, np.float32), f"conv{i}.b")]  # fmt: skip
        nodes.append(helper.make_node(
            "Conv", [cur, f"conv{i}.w", f"conv{i}.b"], [f"c{i}"], kernel_shape=[3, 3],
            pads=[1, 1, 1, 1],
        ))  # fmt: skip
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        cur, c_in = f"r{i}", c_out
        if i < len(WIDTHS) - 1:
            nodes.append(
                helper.make_node("MaxPool", [cur], [f"p{i}"], kernel_shape=[2, 2], strides=[2, 2])
            )
            cur = f"p{i}"
    head = (rng.standard_normal((c_in, k)) / np.sqrt(c_in)).astype(np.float32)
    inits += [numpy_helper.from_array(head, "head.w"),
              numpy_helper.from_array(np.zeros(k, np.float32), "head.b")]  # fmt: skip
    nodes += [
        helper.make_node("GlobalAveragePool", [cur], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "head.w", "head.b"], ["logits"]),
    ]
    out = "logits"
    if log_softmax:
        nodes.append(helper.make_node("LogSoftmax", ["logits"], [PATCH_OUTPUT], axis=-1))
        out = PATCH_OUTPUT
    graph = helper.make_graph(
        nodes,
        "small_cnn_patch" if log_softmax else "small_cnn",
        [helper.make_tensor_value_info(PATCH_INPUT, TensorProto.FLOAT, ["N", *shape])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", k])],
        initializer=inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="eraser-gateway"
    )
    model.ir_version = min(model.ir_version, 8)
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def write_image_model(directory: Path, seed: int = 1) -> Path:
    """The deployed CNN in a ``python -m blackbox serve-dir`` directory, as ``IMAGE_MODEL``."""
    from blackbox.onnx_model import write_onnx_model

    directory.mkdir(parents=True, exist_ok=True)
    blob = small_cnn(seed, log_softmax=False)
    return write_onnx_model(directory, IMAGE_MODEL, blob, list(IMAGE_CLASSES), list(IMAGE_SHAPE))


def image_patch(seed: int = 2) -> bytes:
    """The small-CNN patch the gateway runs beside the upstream call (another seed)."""
    return small_cnn(seed, log_softmax=True)


def image(seed: int = 0) -> np.ndarray:
    """One deterministic image, float32 [1, 3, 64, 64] in [0, 1) like decoded pixels."""
    return np.random.default_rng(seed).random((1, *IMAGE_SHAPE), dtype=np.float32)


def model_config(upstream_base: str, name: str, binary: bool) -> dict[str, Any]:
    """A gateway model entry for the stand-in's CNN; ``binary``: the upstream call uses the
    binary tensor data extension both ways (``upstream.binary_data``)."""
    return {
        "name": name,
        "classes": list(IMAGE_CLASSES),
        "input": {"shape": list(IMAGE_SHAPE)},
        "upstream": {
            "url": f"{upstream_base}/v2/models/{IMAGE_MODEL}/infer",
            "protocol": "v2",
            "input_name": "x",
            "output_name": "logits",
            "output_kind": "logits",
            "binary_data": binary,
        },
    }


def json_body(x: np.ndarray) -> bytes:
    """The image as an OIP v2 JSON request (every value a JSON number)."""
    return v2_body(x)


def binary_body(x: np.ndarray) -> tuple[bytes, dict[str, str]]:
    """The image as a binary tensor data request: a JSON header, then the raw little-endian
    FP32 values; the output is asked for as binary data too. Returns the body and the headers
    that say where the JSON ends."""
    raw = np.ascontiguousarray(x, dtype="<f4").tobytes()
    tensor = {"name": "x", "shape": list(x.shape), "datatype": "FP32",
              "parameters": {"binary_data_size": len(raw)}}  # fmt: skip
    header = orjson.dumps({"inputs": [tensor], "parameters": {"binary_data_output": True}})
    headers = {HEADER_LENGTH: str(len(header)), "Content-Type": "application/octet-stream"}
    return header + raw, headers


def grpc_body(x: np.ndarray, model: str) -> bytes:
    """A serialised ``ModelInferRequest`` with the image in ``raw_input_contents`` (as Triton's
    client sends it); the generator posts these bytes unchanged."""
    from tritonclient.grpc import service_pb2 as pb

    tensor = pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=list(x.shape))
    request = pb.ModelInferRequest(
        model_name=model,
        inputs=[tensor],
        raw_input_contents=[np.ascontiguousarray(x, dtype="<f4").tobytes()],
    )
    return request.SerializeToString()
