"""The stand-in's OIP v2 gRPC endpoint (``serve-dir --grpc-port``), as Triton serves one beside
its HTTP port: ServerLive, ServerReady, ModelReady and ModelInfer; the rest answer UNIMPLEMENTED.

Kept small on purpose: it lets a benchmark call the black box directly over gRPC, so the
gateway's gRPC route is compared with the upstream called the same way. Inputs: one FP32
tensor ``x`` in ``raw_input_contents`` or ``contents.fp32_contents``; the answer is the
``logits`` output in ``raw_output_contents``, as Triton answers. The generated messages and
servicer come with ``tritonclient[grpc]`` (imported only when the port is asked for).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from typing import Any

import grpc
import numpy as np
from grpc import aio
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from blackbox.server import INPUT_NAME, ServedModel


class InputError(ValueError):
    """A request the stand-in refuses (INVALID_ARGUMENT, with this message)."""


def input_array(request: Any, row: tuple[int, ...]) -> np.ndarray:
    """The request's one FP32 input as float32 [N, *row]."""
    if len(request.inputs) != 1:
        raise InputError(f"expected exactly 1 input tensor, got {len(request.inputs)}")
    t = request.inputs[0]
    shape = list(t.shape)
    if t.datatype != "FP32" or t.name != INPUT_NAME:
        got = f"{t.name!r} ({t.datatype})"
        raise InputError(f"expected one FP32 input named {INPUT_NAME!r}, got {got}")
    if len(shape) != len(row) + 1 or tuple(shape[1:]) != row or shape[0] < 0:
        raise InputError(f"input shape must be [N, {', '.join(map(str, row))}], got {shape}")
    if request.raw_input_contents:
        raw = request.raw_input_contents[0]
        if len(raw) != math.prod(shape) * 4:
            raise InputError(f"{len(raw)} raw bytes do not fit FP32 shape {shape}")
        return np.frombuffer(raw, dtype="<f4").reshape(shape)
    values = t.contents.fp32_contents
    if len(values) != math.prod(shape):
        raise InputError(f"{len(values)} fp32_contents for shape {shape}")
    return np.asarray(values, dtype=np.float32).reshape(shape)


class StandinService(pb_grpc.GRPCInferenceServiceServicer):
    """ModelInfer on the same models (and the same artificial delay) as the HTTP app."""

    def __init__(self, models: Mapping[str, ServedModel], delay_ms: float = 0.0) -> None:
        self.models = dict(models)
        self.delay_s = max(delay_ms, 0.0) / 1000.0

    async def ServerLive(self, request: Any, context: aio.ServicerContext) -> Any:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: aio.ServicerContext) -> Any:
        return pb.ServerReadyResponse(ready=True)

    async def ModelReady(self, request: Any, context: aio.ServicerContext) -> Any:
        return pb.ModelReadyResponse(ready=request.name in self.models)

    async def ModelInfer(self, request: Any, context: aio.ServicerContext) -> Any:
        model = self.models.get(request.model_name)
        if model is None:
            missing = f"model {request.model_name!r} not found"
            await context.abort(grpc.StatusCode.NOT_FOUND, missing)
        try:
            x = input_array(request, tuple(model.input_shape))
        except InputError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        logits = np.ascontiguousarray(model.logits(x), dtype="<f4")
        out = pb.ModelInferResponse.InferOutputTensor(
            name="logits", datatype="FP32", shape=list(logits.shape)
        )
        return pb.ModelInferResponse(
            model_name=request.model_name,
            model_version="1",
            id=request.id,
            outputs=[out],
            raw_output_contents=[logits.tobytes()],
        )


async def start(
    models: Mapping[str, ServedModel], host: str, port: int, delay_ms: float = 0.0
) -> aio.Server:
    """A started gRPC server on ``host:port`` (stop it with ``await server.stop(grace)``)."""
    server = aio.server(options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)])
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(StandinService(models, delay_ms), server)
    server.add_insecure_port(f"{host}:{port}")
    await server.start()
    return server
