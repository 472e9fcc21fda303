"""Open Inference Protocol v2 over gRPC: KServe's and Triton's ``GRPCInferenceService``.

Served by ``grpc.aio`` on its own port (``grpc.port``), inside the app's lifespan, so one
process runs one event loop with both servers on it: uvicorn's HTTP and this. ModelInfer goes
through the same data plane (``Dataplane.predict``, counted with ``route="grpc"``) and the same
tensor rules as ``POST /v2/models/{m}/infer``: the v2 route's helpers check the input, pick the
outputs and build the answer's parameters (stack revision, ``debiased``, patches).

- **Generated code**: ``tritonclient.grpc.service_pb2`` / ``service_pb2_grpc`` — the messages,
  the servicer base class and ``add_GRPCInferenceServiceServicer_to_server`` that Triton
  generates from the protocol's ``grpc_service.proto`` and ships, kept with the client that
  Triton users call us with; no hand-written stubs, no protoc step in our build.
- **Keys**: the ``authorization`` metadata (``Bearer <key>``, or ``x-api-key``), the prediction
  key, checked by an interceptor before the request message is decoded (its handler is looked
  up without deserialising anything); ServerLive and ServerReady are open, like the HTTP probes.
- **Tensors**: ``raw_input_contents`` (one per input, in order, the binary layout of
  ``service.oip``) or the typed ``contents``; outputs always come back in
  ``raw_output_contents``, as Triton answers. ``parameters``: ``return_raw`` (bool) and
  ``monitor`` (a JSON string: one ``{attribute: group}`` object per instance).
- **Versions**: ``model_version`` in ModelInfer, ModelMetadata and ModelReady is not read: any
  version is the model's one version (its active stack), as on the HTTP ``/versions/{v}`` routes.
- **Errors**: the gateway's errors as gRPC status codes with their messages (``STATUS``), the
  error code in the ``x-eraser-error-code`` trailing metadata.
- **Request ids**: ``x-request-id`` and ``traceparent`` metadata as the HTTP edge takes them;
  the id (and on success ``x-eraser-revision``) comes back in the trailing metadata.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Final, TypeVar

import grpc
import numpy as np
import orjson
from grpc import aio
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from service import oip
from service.api import routes_v2
from service.api.auth import check_presented, key_of
from service.api.edge import MB
from service.api.schemas import V2InferRequest, V2RequestedOutput, V2RequestParameters, V2Tensor
from service.api.throttled_log import ThrottledLog
from service.dataplane import Dataplane
from service.errors import EraserError, InvalidTensor
from service.request_context import accepted_request_id, request_context, request_id
from service.settings import GatewaySettings

log = logging.getLogger(__name__)
bugs = ThrottledLog(log)

T = TypeVar("T")
OPEN_METHODS: Final = frozenset({"ServerLive", "ServerReady"})
ERROR_CODE_KEY: Final = "x-eraser-error-code"
REVISION_KEY: Final = "x-eraser-revision"
STOP_GRACE_S: Final = 5.0
# The gateway's errors by HTTP status, as gRPC codes (the 5xx upstream and patch failures a
# client should retry elsewhere or later are UNAVAILABLE).
STATUS: Final[dict[int, grpc.StatusCode]] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    413: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    502: grpc.StatusCode.UNAVAILABLE,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.UNAVAILABLE,
}
# Typed contents by datatype (FP16 has none: raw_input_contents only).
CONTENTS: Final = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


@asynccontextmanager
async def serving(settings: GatewaySettings, plane: Dataplane) -> AsyncIterator[int]:
    """The gRPC service on ``grpc.host``:``grpc.port`` until the block exits; yields the port
    it bound (the chosen one when ``grpc.port`` is 0)."""
    limit = int(settings.limits.predict_body_mb * MB)
    server = aio.server(
        interceptors=[KeyCheck(settings)],
        options=[("grpc.max_receive_message_length", limit)],
    )
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceService(plane), server)
    address = f"{settings.grpc.host or '127.0.0.1'}:{settings.grpc.port}"
    port = server.add_insecure_port(address)
    await server.start()
    log.info("OIP v2 gRPC service on %s", address.rsplit(":", 1)[0] + f":{port}")
    try:
        yield port
    finally:
        await server.stop(STOP_GRACE_S)


class KeyCheck(aio.ServerInterceptor):
    """The prediction key from the ``authorization`` metadata, before the request is decoded:
    a refused call gets a handler that reads the message as bytes and aborts."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.expected = settings.predict_api_key

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or details.method.rsplit("/", 1)[-1] in OPEN_METHODS:
            return handler
        metadata = dict(details.invocation_metadata or ())
        key = key_of(metadata.get("authorization"), metadata.get("x-api-key"))
        try:
            check_presented(key, self.expected, "prediction")
        except EraserError as exc:
            return _refusal(exc, metadata.get("x-request-id"))
        return handler


def _refusal(exc: EraserError, caller_id: str | None) -> grpc.RpcMethodHandler:
    rid = accepted_request_id(caller_id)

    async def refuse(_raw: bytes, context: aio.ServicerContext) -> None:
        await _abort(context, exc, rid)

    return grpc.unary_unary_rpc_method_handler(refuse)  # no deserializer: bytes, not parsed


async def _abort(context: aio.ServicerContext, exc: EraserError, rid: str) -> None:
    code = STATUS.get(exc.status_code, grpc.StatusCode.INTERNAL)
    await context.abort(code, exc.message, ((ERROR_CODE_KEY, exc.code), ("x-request-id", rid)))


class InferenceService(pb_grpc.GRPCInferenceServiceServicer):
    """The six RPCs of the protocol; the others (statistics, repository, shared memory) answer
    UNIMPLEMENTED from the base class."""

    def __init__(self, plane: Dataplane) -> None:
        self.plane = plane

    async def ServerLive(self, request: Any, context: aio.ServicerContext) -> Any:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: aio.ServicerContext) -> Any:
        ready = all(self.plane.ready(m.name) for m in self.plane.settings.models)
        return pb.ServerReadyResponse(ready=ready)

    async def ServerMetadata(self, request: Any, context: aio.ServicerContext) -> Any:
        return pb.ServerMetadataResponse(**await routes_v2.server_metadata())

    async def ModelReady(self, request: Any, context: aio.ServicerContext) -> Any:
        async def ready() -> Any:
            return pb.ModelReadyResponse(
                ready=self.plane.ready(self.plane.model(request.name).name)
            )

        return await _handled(context, ready)

    async def ModelMetadata(self, request: Any, context: aio.ServicerContext) -> Any:
        async def metadata() -> Any:
            doc = await routes_v2.metadata(request.name, self.plane)
            tensors = {
                side: [pb.ModelMetadataResponse.TensorMetadata(**t) for t in doc[side]]
                for side in ("inputs", "outputs")
            }
            return pb.ModelMetadataResponse(
                name=doc["name"], versions=doc["versions"], platform=doc["platform"], **tensors
            )

        return await _handled(context, metadata)

    async def ModelInfer(self, request: Any, context: aio.ServicerContext) -> Any:
        return await _handled(context, lambda: self._infer(request, context))

    async def _infer(self, request: Any, context: aio.ServicerContext) -> Any:
        plane = self.plane
        cfg = plane.model(request.model_name)
        body = v2_request(request)
        arrays = input_arrays(request)
        x = routes_v2.input_tensor(body, arrays, cfg, plane.settings.max_batch)
        parameters = body.parameters or routes_v2.NO_PARAMETERS
        wanted = routes_v2.requested_outputs(body, cfg, parameters)
        monitor = None
        if parameters.monitor is not None:
            monitor = routes_v2.monitor_rows(parameters.monitor)
        served = await plane.predict(cfg, x, "grpc", monitor)
        doc = routes_v2.answer_document(body, served.prediction)
        if monitor is not None:
            doc["parameters"]["eraser_request_id"] = served.request_id
        outputs = routes_v2.outputs(served.prediction, wanted)
        context.set_trailing_metadata(
            ((REVISION_KEY, str(served.prediction.stack.revision)), *_id_metadata())
        )
        return pb.ModelInferResponse(
            model_name=doc["model_name"],
            model_version=doc["model_version"],
            id=doc["id"] or "",
            parameters={k: _parameter(v) for k, v in doc["parameters"].items()},
            outputs=[
                pb.ModelInferResponse.InferOutputTensor(
                    name=o.name, datatype=o.datatype, shape=o.values.shape
                )
                for o in outputs
            ],
            raw_output_contents=[oip.raw_bytes(o) for o in outputs],
        )


async def _handled(context: aio.ServicerContext, call: Callable[[], Awaitable[T]]) -> T:
    """``call`` with the caller's request id and trace context set, its errors as statuses."""
    metadata = dict(context.invocation_metadata() or ())
    with request_context(metadata.get("x-request-id"), metadata.get("traceparent")) as rid:
        try:
            return await call()
        except EraserError as exc:
            await _abort(context, exc, rid)
            raise  # abort raises; this is never reached
        except Exception as exc:
            if isinstance(exc, aio.AbortError):
                raise
            bugs.error(
                (context.peer, type(exc)), "unhandled error in gRPC call (%s)", exc, exc_info=True
            )
            await context.abort(grpc.StatusCode.INTERNAL, "internal error; see gateway logs")
            raise


def _id_metadata() -> tuple[tuple[str, str], ...]:
    rid = request_id.get()
    return (("x-request-id", rid),) if rid is not None else ()


def _parameter(value: object) -> Any:
    """An answer parameter as an ``InferParameter``: bools, integers, strings; anything else
    (the patch list) as a JSON string."""
    if isinstance(value, bool):
        return pb.InferParameter(bool_param=value)
    if isinstance(value, int):
        return pb.InferParameter(int64_param=value)
    if isinstance(value, str):
        return pb.InferParameter(string_param=value)
    return pb.InferParameter(string_param=orjson.dumps(value).decode())


# --------------------------------------------------------------------------------------------
# Requests
# --------------------------------------------------------------------------------------------


def v2_request(request: Any) -> V2InferRequest:
    """The request as the v2 route's helpers read it: input names, shapes and datatypes (the
    values are decoded by ``input_arrays``), the requested outputs and the parameters."""
    inputs = [
        V2Tensor.model_construct(
            name=t.name, shape=list(t.shape), datatype=t.datatype, data=None, parameters=None
        )
        for t in request.inputs
    ]
    if not inputs:
        raise InvalidTensor("the request has no inputs")
    outputs = [
        V2RequestedOutput.model_construct(name=o.name, parameters=None) for o in request.outputs
    ]
    return V2InferRequest.model_construct(
        id=request.id or None,
        inputs=inputs,
        outputs=outputs or None,
        parameters=request_parameters(request.parameters),
    )


def request_parameters(parameters: Any) -> V2RequestParameters | None:
    """``return_raw`` (a bool) and ``monitor`` (a JSON string); others are ignored."""
    if not parameters:
        return None
    values: dict[str, Any] = {}
    if "return_raw" in parameters:
        raw = parameters["return_raw"]
        if raw.WhichOneof("parameter_choice") != "bool_param":
            raise InvalidTensor("parameters.return_raw must be a bool_param")
        values["return_raw"] = raw.bool_param
    if "monitor" in parameters:
        monitor = parameters["monitor"]
        if monitor.WhichOneof("parameter_choice") != "string_param":
            raise InvalidTensor("parameters.monitor must be a string_param holding JSON")
        try:
            values["monitor"] = orjson.loads(monitor.string_param)
        except orjson.JSONDecodeError as exc:
            raise InvalidTensor(f"parameters.monitor is not JSON: {exc}") from None
    return V2RequestParameters(**values)


def input_arrays(request: Any) -> list[np.ndarray]:
    """Every input as a numpy array of its shape: from ``raw_input_contents`` (one entry per
    input, in order, or none at all) or from its typed ``contents``."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidTensor(
            f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs: with raw contents, "
            "every input needs one, in order"
        )
    arrays = []
    for i, t in enumerate(request.inputs):
        tensor = V2Tensor.model_construct(
            name=t.name, shape=list(t.shape), datatype=t.datatype, data=None, parameters=None
        )
        if raw:
            if t.HasField("contents"):
                raise InvalidTensor(f"input {t.name!r} has both contents and raw_input_contents")
            arrays.append(oip.decode_raw(tensor, raw[i]))
        else:
            arrays.append(typed_contents(tensor, t.contents))
    return arrays


def typed_contents(t: V2Tensor, contents: Any) -> np.ndarray:
    """An input from its typed contents, in the field its datatype uses."""
    if t.datatype not in CONTENTS:
        if t.datatype in oip.NUMERIC:  # FP16: no typed field in the protocol
            raise InvalidTensor(f"input {t.name!r}: {t.datatype} needs raw_input_contents")
        known = [*oip.NUMERIC, oip.BYTES]
        raise InvalidTensor(f"input {t.name!r} has unknown datatype {t.datatype!r}; one of {known}")
    if any(d < 0 for d in t.shape):
        raise InvalidTensor(f"input {t.name!r} has a negative dimension in shape {t.shape}")
    field = CONTENTS[t.datatype]
    values = getattr(contents, field)
    count = math.prod(t.shape)
    if len(values) != count:
        raise InvalidTensor(
            f"input {t.name!r}: {len(values)} values in {field}, shape {t.shape} needs {count}"
        )
    if t.datatype == oip.BYTES:
        array = np.empty(count, dtype=object)
        array[:] = list(values)
        return array.reshape(t.shape)
    try:
        array = np.array(values, dtype=oip.NUMERIC[t.datatype])
    except OverflowError as exc:
        raise InvalidTensor(f"input {t.name!r}: a value does not fit {t.datatype}: {exc}") from None
    return array.reshape(t.shape)
