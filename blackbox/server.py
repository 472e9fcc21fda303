"""A minimal Open Inference Protocol v2 server for the stand-in model(s).

It plays the part of the unmodified deployed endpoint (KServe/Triton/MLServer) that the gateway
sits in front of, so the gateway's OIP adapter is exercised against a real HTTP server. The infer
hot path is deliberately thin: raw body → orjson → numpy → orjson, no pydantic model for the data
array (validating 10^4 floats through pydantic would dominate latency in benchmarks).

Like Triton, it speaks the binary tensor data extension: an input with
``parameters.binary_data_size`` follows the JSON header (``Inference-Header-Content-Length``),
and an output asked for with ``parameters.binary_data`` (or ``binary_data_output``) comes back
as raw little-endian bytes after the answer's JSON header. Numeric datatypes only.

One process can serve several models by name (``/v2/models/{name}``), as a Triton or MLServer
model repository does: the numpy COMPAS MLP and/or ONNX models (``blackbox.onnx_model``) that the
quality benchmark trains with PyTorch and exports. This module never imports torch.
"""

from __future__ import annotations

import asyncio
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import orjson
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response

from blackbox.model import MlpWeights, train_compas_mlp

OUTPUT_NAMES: tuple[str, ...] = ("logits", "probabilities")
DEFAULT_OUTPUTS: tuple[str, ...] = ("logits",)
INPUT_NAME = "x"
HEADER_LENGTH = "Inference-Header-Content-Length"
_DTYPES = {
    name: np.dtype(code)
    for name, code in {"FP16": "<f2", "FP32": "<f4", "FP64": "<f8", "INT8": "<i1"}.items()
    | {"INT16": "<i2", "INT32": "<i4", "INT64": "<i8", "UINT8": "<u1"}.items()
    | {"UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8"}.items()
}
_NUMERIC_DATATYPES = frozenset(_DTYPES)
_OPTS = orjson.OPT_SERIALIZE_NUMPY


@runtime_checkable
class ServedModel(Protocol):
    """What the server needs from a model: ``MlpWeights`` and ``OnnxModel`` both provide it."""

    platform: str  # OIP metadata "platform", e.g. "numpy-mlp" or "onnxruntime"

    @property
    def classes(self) -> list[str]: ...

    @property
    def feature_names(self) -> list[str] | None: ...

    @property
    def input_shape(self) -> tuple[int, ...]: ...

    def logits(self, x: np.ndarray) -> np.ndarray: ...

    def probabilities(self, x: np.ndarray) -> np.ndarray: ...


class InferError(Exception):
    """A client error, answered as OIP's ``{"error": msg}`` with the given status."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def _json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload, option=_OPTS), status, media_type="application/json")


def _parse_input(
    body: Any, input_shape: tuple[int, ...] | int, binary: bytes | None = None
) -> np.ndarray:
    """Validate the single input tensor and return it as float32 [N, *input_shape].

    ``input_shape`` is one row's shape: ``(F,)`` for a tabular model (an int F is accepted as
    before), e.g. ``(3, 28, 28)`` for an image model. ``binary``: what followed the JSON
    header of a binary tensor data request (None: the request had no such header).
    """
    row = (input_shape,) if isinstance(input_shape, int) else tuple(input_shape)
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
        raise InferError("request must be a JSON object with an 'inputs' list")
    if len(body["inputs"]) != 1:
        raise InferError(f"expected exactly 1 input tensor, got {len(body['inputs'])}")
    tensor = body["inputs"][0]
    size = (tensor.get("parameters") or {}).get("binary_data_size")
    needed = {"shape", "datatype"} if size is not None else {"shape", "datatype", "data"}
    if not isinstance(tensor, dict) or not needed <= tensor.keys():
        raise InferError("input tensor needs 'name', 'shape', 'datatype' and 'data'")
    shape, datatype = tensor["shape"], tensor["datatype"]
    if datatype not in _NUMERIC_DATATYPES:
        raise InferError(f"unsupported datatype {datatype!r}; expected FP32")
    ok_shape = isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)
    if not ok_shape or len(shape) != len(row) + 1 or tuple(shape[1:]) != row:
        want = ", ".join(str(d) for d in row)
        raise InferError(f"input shape must be [N, {want}], got {shape}")
    if size is not None:
        return _binary_input(binary, size, shape, _DTYPES[datatype])
    try:
        arr = np.asarray(tensor["data"], dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InferError(f"input data is not a numeric array: {exc}") from None
    expected = math.prod(shape)
    if arr.size != expected:
        raise InferError(f"input data has {arr.size} elements, shape {shape} needs {expected}")
    return arr.reshape(shape)


def _binary_input(binary: bytes | None, size: Any, shape: list[int], dtype: np.dtype) -> np.ndarray:
    if binary is None:
        raise InferError(f"binary_data_size without an {HEADER_LENGTH} header")
    if size != len(binary) or size != math.prod(shape) * dtype.itemsize:
        raise InferError(f"binary_data_size {size!r:.20} does not fit shape {shape} or the body")
    return np.frombuffer(binary, dtype=dtype).astype(np.float32).reshape(shape)


def _split(body: bytes, header: str | None) -> tuple[bytes, bytes | None]:
    """(JSON, binary data) of a request; without the header the whole body is JSON."""
    if header is None:
        return body, None
    if not header.isdigit() or int(header) > len(body):
        raise InferError(f"invalid {HEADER_LENGTH} {header!r:.20}")
    return body[: int(header)], body[int(header) :]


def _binary_outputs(body: dict[str, Any], names: list[str]) -> list[bool]:
    """Per requested output, whether it goes back as binary data."""
    default = (body.get("parameters") or {}).get("binary_data_output") is True
    wanted = {o.get("name"): o.get("parameters") or {} for o in body.get("outputs") or []}
    return [wanted.get(n, {}).get("binary_data", default) is True for n in names]


def _answer(out: dict[str, Any], names: list[str], values: dict, binary: list[bool]) -> Response:
    """The answer, JSON or a JSON header followed by the binary outputs' bytes."""
    blobs = []
    out["outputs"] = []
    for name, as_binary in zip(names, binary, strict=True):
        if not as_binary:
            out["outputs"].append(_tensor(name, values[name]))
            continue
        blob = np.ascontiguousarray(values[name], dtype="<f4").tobytes()
        blobs.append(blob)
        out["outputs"].append(
            {"name": name, "shape": list(values[name].shape), "datatype": "FP32"}
            | {"parameters": {"binary_data_size": len(blob)}}
        )
    if not blobs:
        return _json(out)
    header = orjson.dumps(out, option=_OPTS)
    headers = {HEADER_LENGTH: str(len(header))}
    return Response(b"".join([header, *blobs]), media_type="application/octet-stream",
                    headers=headers)  # fmt: skip


def _requested_outputs(body: dict[str, Any]) -> list[str]:
    """Names from the optional ``outputs`` list; without one, only ``logits`` (like MLServer,
    which answers its default output unless another is asked for)."""
    outputs = body.get("outputs")
    if outputs is None:
        return list(DEFAULT_OUTPUTS)
    if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
        raise InferError("'outputs' must be a list of {'name': ...} objects")
    names = [o.get("name") for o in outputs]
    unknown = [n for n in names if n not in OUTPUT_NAMES]
    if unknown:
        raise InferError(f"unknown output(s) {unknown}; available: {list(OUTPUT_NAMES)}")
    return names  # type: ignore[return-value]


def _tensor(name: str, values: np.ndarray) -> dict[str, Any]:
    return {"name": name, "shape": list(values.shape), "datatype": "FP32", "data": values.ravel()}


def _metadata(model: ServedModel, name: str, version: str) -> dict[str, Any]:
    """OIP model metadata; parameters carry the column order (null for images) and class names
    a client needs."""
    k = len(model.classes)
    return {
        "name": name,
        "versions": [version],
        "platform": model.platform,
        "inputs": [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, *model.input_shape]}],
        "outputs": [{"name": o, "datatype": "FP32", "shape": [-1, k]} for o in OUTPUT_NAMES],
        "parameters": {"feature_names": model.feature_names, "classes": model.classes},
    }


class _Entry:
    """A served model with what its requests need precomputed (metadata, row shape)."""

    __slots__ = ("input_shape", "metadata", "model")

    def __init__(self, model: ServedModel, name: str, version: str) -> None:
        self.model = model
        self.input_shape = tuple(model.input_shape)
        self.metadata = _metadata(model, name, version)


def create_app(
    model: ServedModel | Mapping[str, ServedModel],
    name: str = "compas",
    version: str = "1",
    delay_ms: float = 0.0,
) -> FastAPI:
    """The OIP v2 app for one model (served as ``name``) or for a mapping name → model (``name``
    is then unused), each under ``/v2/models/{name}``; unknown names get 404.

    ``delay_ms`` simulates a slower real model in benchmarks (the same for every model).
    """
    models: dict[str, ServedModel] = dict(model) if isinstance(model, Mapping) else {name: model}
    if not models:
        raise ValueError("create_app needs at least one model")
    for model_name, served in models.items():
        if not isinstance(model_name, str) or not model_name or "/" in model_name:
            raise ValueError(f"invalid model name {model_name!r}")
        if not isinstance(served, ServedModel):
            raise TypeError(f"model {model_name!r} lacks the ServedModel interface: {served!r}")
    entries = {n: _Entry(m, n, version) for n, m in models.items()}
    app = FastAPI(title="blackbox", docs_url=None, redoc_url=None, openapi_url=None)
    delay_s = max(delay_ms, 0.0) / 1000.0

    @app.exception_handler(InferError)
    async def _on_error(_: Request, exc: InferError) -> Response:
        return _json({"error": exc.message}, exc.status)

    def _entry(model_name: str) -> _Entry:
        entry = entries.get(model_name)
        if entry is None:
            raise InferError(f"model {model_name!r} not found", status=404)
        return entry

    @app.get("/v2")
    async def server_metadata() -> Response:
        return _json({"name": "blackbox", "version": "1", "extensions": ["binary_tensor_data"]})

    @app.get("/v2/health/live")
    async def live() -> Response:
        return _json({"live": True})

    @app.get("/v2/health/ready")
    async def ready() -> Response:
        return _json({"ready": True})

    @app.get("/v2/models/{model_name}")
    async def model_metadata(model_name: str) -> Response:
        return _json(_entry(model_name).metadata)

    @app.get("/v2/models/{model_name}/ready")
    async def model_ready(model_name: str) -> Response:
        _entry(model_name)
        return _json({"name": model_name, "ready": True})

    async def _infer(model_name: str, request: Request) -> Response:
        entry = _entry(model_name)
        document, binary = _split(await request.body(), request.headers.get(HEADER_LENGTH))
        try:
            body = orjson.loads(document)
        except orjson.JSONDecodeError as exc:
            raise InferError(f"invalid JSON: {exc}") from None
        x = _parse_input(body, entry.input_shape, binary)
        names = _requested_outputs(body)
        if delay_s:
            await asyncio.sleep(delay_s)
        served = entry.model
        values = {"logits": served.logits(x)}
        if "probabilities" in names:
            values["probabilities"] = served.probabilities(x)
        out: dict[str, Any] = {"model_name": model_name, "model_version": version}
        if "id" in body:
            out["id"] = body["id"]
        return _answer(out, names, values, _binary_outputs(body, names))

    app.add_api_route("/v2/models/{model_name}/infer", _infer, methods=["POST"])
    app.add_api_route(
        "/v2/models/{model_name}/versions/{model_version}/infer", _infer, methods=["POST"]
    )
    return app


def ensure_model(path: str | Path, seed: int = 0, race_input: bool = False) -> MlpWeights:
    """Load the model, training and saving it first if missing; the atomic rename lets several
    processes start on an empty cache without reading a half-written file."""
    path = Path(path)
    if path.exists():
        return MlpWeights.load(path)
    model = train_compas_mlp(seed=seed, race_input=race_input)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz")
    os.close(fd)
    model.save(tmp)
    os.chmod(tmp, 0o644)  # mkstemp makes 0600; other users/containers must read the model
    os.replace(tmp, path)
    return model


def build_config(app: FastAPI, host: str = "127.0.0.1", port: int = 9001) -> uvicorn.Config:
    """uvicorn settings for the fast path: uvloop, httptools, no access log."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )


def serve(
    model_path: str | Path,
    host: str = "127.0.0.1",
    port: int = 9001,
    name: str = "compas",
    delay_ms: float = 0.0,
    seed: int = 0,
    race_input: bool = False,
) -> None:
    """Run the server in the foreground (blocking)."""
    model = ensure_model(model_path, seed=seed, race_input=race_input)
    app = create_app(model, name=name, delay_ms=delay_ms)
    uvicorn.Server(build_config(app, host=host, port=port)).run()


def serve_models(
    models: Mapping[str, ServedModel],
    host: str = "127.0.0.1",
    port: int = 9001,
    delay_ms: float = 0.0,
    grpc_port: int | None = None,
) -> None:
    """Run a server for several named models in the foreground (blocking); with ``grpc_port``
    also their OIP v2 gRPC endpoint (``blackbox.grpc_server``) on the same event loop."""
    app = create_app(models, delay_ms=delay_ms)
    server = uvicorn.Server(build_config(app, host=host, port=port))
    if grpc_port is None:
        server.run()
        return
    import uvloop

    uvloop.run(_serve_with_grpc(server, models, host, grpc_port, delay_ms))


async def _serve_with_grpc(
    server: uvicorn.Server,
    models: Mapping[str, ServedModel],
    host: str,
    grpc_port: int,
    delay_ms: float,
) -> None:
    """gRPC starts first, so the HTTP readiness probe answering means both are up."""
    from blackbox import grpc_server

    grpc = await grpc_server.start(models, host, grpc_port, delay_ms)
    try:
        await server.serve()
    finally:
        await grpc.stop(1.0)
