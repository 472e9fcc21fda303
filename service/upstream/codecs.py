"""Wire codecs for the three upstream protocols: request encoding and response decoding, no I/O.

A codec is built once per model (``make_codec``) so that everything derivable from the config —
the requested output list, the spliced generic template, the parsed response path, the expected
column count — is computed at start-up and the per-request work is one ``orjson`` call each way
plus a few numpy checks. ``orjson.OPT_SERIALIZE_NUMPY`` writes float32 arrays directly (shortest
float32 repr, no ``tolist()`` round trip through Python floats).

Decoding returns the upstream's raw scores as float64 ``[N, C]`` where C is K, or 1 for
``sigmoid_logits``, checked by ``service.upstream.scores``; ``eraser_math.to_log_probs``
normalises them.

A request is ``Encoded``: the body and, for OIP v2 with ``upstream.binary_data``, the length of
its JSON header (the binary tensor data extension, ``service.oip``); the answer is decoded with
the ``Inference-Header-Content-Length`` the upstream sent back, if any.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import numpy as np
import orjson

from service import oip
from service.errors import InvalidTensor, UpstreamBadResponse
from service.settings import ModelConfig, UpstreamConfig, WireProtocol
from service.upstream.scores import (
    ScoreSpec,
    error_note,
    numeric_array,
    parse_json,
    validate_scores,
)

INSTANCES_PLACEHOLDER: Final = "$instances"
_DUMPS: Final = orjson.OPT_SERIALIZE_NUMPY
Encoded = tuple[bytes, int | None]  # body, and its JSON header's length when binary data follows


class Codec(Protocol):
    """What the client needs from a protocol: bytes out, validated scores back."""

    def encode(self, x: np.ndarray) -> Encoded:
        """Request body for the batch ``x`` [N, *input_shape], and the length of its JSON
        header when binary tensor data follows it (None: the body is all JSON)."""
        ...

    def decode(self, body: bytes, n: int, header_length: str | None = None) -> np.ndarray:
        """Validated float64 scores [n, columns] from a 2xx response body (``header_length``:
        the answer's ``Inference-Header-Content-Length``, if it sent one)."""
        ...

    def decode_typed(
        self, body: bytes, n: int, header_length: str | None = None
    ) -> tuple[np.ndarray, str | None]:
        """``decode``, and the OIP datatype the upstream gave its scores (None: it gave none)."""
        ...


def _as_float32(x: np.ndarray) -> np.ndarray:
    """C-contiguous float32, the layout orjson's numpy serialiser requires."""
    return np.ascontiguousarray(x, dtype=np.float32)


def _dump(doc: Any) -> bytes:
    return orjson.dumps(doc, option=_DUMPS)


# --------------------------------------------------------------------------------------------
# Open Inference Protocol v2 (KServe, Triton, MLServer)
# --------------------------------------------------------------------------------------------


def encode_oip_v2(x: np.ndarray, input_name: str, output_name: str | None = None) -> bytes:
    """One FP32 input tensor, row-major flat data; names the output when one is configured.

    Naming it matters: MLServer's sklearn runtime answers ``predict`` (labels) unless
    ``predict_proba`` is requested.
    """
    x = _as_float32(x)
    doc: dict[str, Any] = {
        "inputs": [
            {"name": input_name, "shape": list(x.shape), "datatype": "FP32", "data": x.reshape(-1)}
        ]
    }
    if output_name is not None:
        doc["outputs"] = [{"name": output_name}]
    return _dump(doc)


def encode_oip_v2_binary(x: np.ndarray, input_name: str, output_name: str | None = None) -> Encoded:
    """``encode_oip_v2`` with the binary tensor data extension: the FP32 input's raw bytes
    after the JSON header, and the output asked for as binary data (the named one, or every
    output through ``binary_data_output``)."""
    x = _as_float32(x)
    blob = x.tobytes()
    tensor = {"name": input_name, "shape": list(x.shape), "datatype": "FP32"}
    tensor["parameters"] = {"binary_data_size": len(blob)}
    doc: dict[str, Any] = {"inputs": [tensor]}
    if output_name is None:
        doc["parameters"] = {"binary_data_output": True}
    else:
        doc["outputs"] = [{"name": output_name, "parameters": {"binary_data": True}}]
    header = orjson.dumps(doc)
    return header + blob, len(header)


def _pick_output(doc: Any, output_name: str | None) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise UpstreamBadResponse("OIP v2 answer is not a JSON object")
    outputs = doc.get("outputs")
    if not isinstance(outputs, list) or not outputs:
        raise UpstreamBadResponse(f"OIP v2 answer has no 'outputs' list{error_note(doc)}")
    if output_name is None:
        chosen = outputs[0]
    else:
        named = [o for o in outputs if isinstance(o, dict) and o.get("name") == output_name]
        if not named:
            sent = [o.get("name") for o in outputs if isinstance(o, dict)]
            raise UpstreamBadResponse(
                f"no output tensor named {output_name!r} (upstream sent {sent})"
            )
        chosen = named[0]
    if not isinstance(chosen, dict):
        raise UpstreamBadResponse("OIP v2 output entry is not a JSON object")
    return chosen


def _tensor(output: dict[str, Any], outputs: list[Any], binary: memoryview) -> np.ndarray:
    """The output's ``data`` reshaped by its ``shape`` (``data`` is normally flat, row-major),
    or its binary data, which follows the binary data of the outputs before it."""
    name = output.get("name")
    shape = output.get("shape")
    if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
        raise UpstreamBadResponse(f"output tensor {name!r} has no valid 'shape' ({shape!r:.60})")
    if _binary_size(output) is not None:
        return _binary_tensor(output, outputs, binary)
    if "data" not in output:
        raise UpstreamBadResponse(f"output tensor {name!r} has no 'data'")
    data = numeric_array(output["data"], f"output tensor {name!r}")
    if data.size != math.prod(shape):
        raise UpstreamBadResponse(
            f"output tensor {name!r} has shape {shape} but {data.size} values"
        )
    return data.reshape(shape)


def _binary_size(output: Any) -> int | None:
    """An output's ``parameters.binary_data_size``: None when it has none (JSON ``data``)."""
    if not isinstance(output, dict):
        return None
    try:
        return oip.binary_data_size(
            output.get("parameters"), f"output tensor {output.get('name')!r}"
        )
    except InvalidTensor as exc:
        raise UpstreamBadResponse(exc.message) from None


@dataclass(frozen=True, slots=True)
class _OutputTensor:
    """An answer's output entry as ``service.oip`` reads a tensor."""

    name: str
    shape: list[int]
    datatype: str
    data: None = None
    parameters: None = None


def _binary_tensor(output: dict[str, Any], outputs: list[Any], binary: memoryview) -> np.ndarray:
    """The output's binary data, decoded by ``service.oip`` from its datatype and shape."""
    offset = 0
    for other in outputs:
        if other is output:
            break
        offset += _binary_size(other) or 0
    size = _binary_size(output) or 0
    name = output.get("name")
    if offset + size > len(binary):
        raise UpstreamBadResponse(
            f"output tensor {name!r}: binary_data_size {size} at offset {offset} runs past the "
            f"{len(binary)} bytes of binary data in the answer"
        )
    datatype = output.get("datatype")
    if datatype not in oip.NUMERIC:
        raise UpstreamBadResponse(f"output tensor {name!r} has datatype {datatype!r:.20}")
    tensor = _OutputTensor(str(name), output["shape"], datatype)
    try:
        values = oip.decode_raw(tensor, binary[offset : offset + size], what="output tensor")
    except InvalidTensor as exc:
        raise UpstreamBadResponse(exc.message) from None
    return values.astype(np.float64)


def decode_oip_v2(
    body: bytes,
    n: int,
    spec: ScoreSpec,
    output_name: str | None = None,
    header_length: str | None = None,
) -> np.ndarray:
    """Scores from the output named ``output_name`` (or the first output)."""
    return decode_oip_v2_typed(body, n, spec, output_name, header_length)[0]


def decode_oip_v2_typed(
    body: bytes,
    n: int,
    spec: ScoreSpec,
    output_name: str | None = None,
    header_length: str | None = None,
) -> tuple[np.ndarray, str | None]:
    """``decode_oip_v2`` and the output tensor's ``datatype`` (None if it is not a string).

    With ``header_length`` (the answer's ``Inference-Header-Content-Length``) the body is a
    JSON header followed by the binary data of the outputs that have ``binary_data_size``."""
    try:
        document, binary = oip.split_body(body, header_length)
    except InvalidTensor as exc:
        raise UpstreamBadResponse(f"binary answer: {exc.message}") from None
    doc = parse_json(document)
    output = _pick_output(doc, output_name)
    values = _tensor(output, doc["outputs"], binary)
    scores = validate_scores(values, n, spec, f"output tensor {output.get('name')!r}")
    datatype = output.get("datatype")
    return scores, datatype if isinstance(datatype, str) else None


# --------------------------------------------------------------------------------------------
# KServe v1
# --------------------------------------------------------------------------------------------


def encode_kserve_v1(x: np.ndarray) -> bytes:
    """``{"instances": [[...], ...]}`` — nested lists in the instance shape."""
    return _dump({"instances": _as_float32(x)})


def decode_kserve_v1(body: bytes, n: int, spec: ScoreSpec) -> np.ndarray:
    """``{"predictions": [[...], ...]}``; a list of scalars is one column (sigmoid)."""
    doc = parse_json(body)
    if not isinstance(doc, dict) or "predictions" not in doc:
        raise UpstreamBadResponse(f"KServe v1 answer has no 'predictions'{error_note(doc)}")
    return validate_scores(doc["predictions"], n, spec, "'predictions'")


# --------------------------------------------------------------------------------------------
# Generic JSON (template in, dotted path out)
# --------------------------------------------------------------------------------------------

_SENTINEL: Final = "\x00eraser-instances\x00"


def _mark_placeholders(node: Any) -> tuple[Any, int]:
    """Copy of ``node`` with every ``"$instances"`` *value* replaced by a sentinel string."""
    if isinstance(node, str):
        return (_SENTINEL, 1) if node == INSTANCES_PLACEHOLDER else (node, 0)
    if isinstance(node, dict):
        pairs = {k: _mark_placeholders(v) for k, v in node.items()}
        return {k: v for k, (v, _) in pairs.items()}, sum(c for _, c in pairs.values())
    if isinstance(node, list):
        items = [_mark_placeholders(v) for v in node]
        return [v for v, _ in items], sum(c for _, c in items)
    return node, 0


def split_template(template: dict[str, Any]) -> list[bytes]:
    """The template serialised once and cut where the instances go.

    Encoding is then ``dumps(x).join(parts)``: no per-request tree walk or template copy.
    Only string values equal to ``"$instances"`` are replaced, never keys or substrings.
    """
    marked, count = _mark_placeholders(template)
    if count == 0:
        raise ValueError(f'generic request_template has no "{INSTANCES_PLACEHOLDER}" value')
    return orjson.dumps(marked).split(orjson.dumps(_SENTINEL))


def encode_generic(x: np.ndarray, template_parts: Sequence[bytes]) -> bytes:
    """The template with the instances (nested lists) spliced in at each placeholder."""
    return _dump(_as_float32(x)).join(template_parts)


PathStep = str | int


def parse_path(path: str) -> tuple[PathStep, ...]:
    """``"outputs.0.scores"`` → ``("outputs", 0, "scores")``; integers index lists."""
    if not path or any(part == "" for part in path.split(".")):
        raise ValueError(f"invalid response_path {path!r}")
    return tuple(int(p) if p.lstrip("-").isdigit() else p for p in path.split("."))


def follow_path(doc: Any, steps: Sequence[PathStep], path: str) -> Any:
    """The value at ``steps``; says which step is missing when the answer lacks it.

    An integer step indexes a list, or is looked up as a string key in an object (JSON keys
    are always strings, so ``"0"`` works for both).
    """
    node = doc
    for i, step in enumerate(steps):
        if isinstance(node, list) and isinstance(step, int) and -len(node) <= step < len(node):
            node = node[step]
        elif isinstance(node, dict) and str(step) in node:
            node = node[str(step)]
        else:
            where = ".".join(str(s) for s in steps[:i]) or "the top level"
            found = f"list of {len(node)}" if isinstance(node, list) else type(node).__name__
            raise UpstreamBadResponse(
                f"response path {path!r}: no {step!r} at {where} (found {found})"
            )
    return node


def decode_generic(
    body: bytes, n: int, spec: ScoreSpec, steps: Sequence[PathStep], path: str
) -> np.ndarray:
    """Scores at the configured dotted path."""
    value = follow_path(parse_json(body), steps, path)
    return validate_scores(value, n, spec, f"value at {path!r}")


# --------------------------------------------------------------------------------------------
# Per-model codec objects
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OipV2Codec:
    input_name: str
    output_name: str | None
    spec: ScoreSpec
    binary: bool = False  # upstream.binary_data: the binary tensor data extension both ways

    def encode(self, x: np.ndarray) -> Encoded:
        if self.binary:
            return encode_oip_v2_binary(x, self.input_name, self.output_name)
        return encode_oip_v2(x, self.input_name, self.output_name), None

    def decode(self, body: bytes, n: int, header_length: str | None = None) -> np.ndarray:
        return decode_oip_v2(body, n, self.spec, self.output_name, header_length)

    def decode_typed(
        self, body: bytes, n: int, header_length: str | None = None
    ) -> tuple[np.ndarray, str | None]:
        return decode_oip_v2_typed(body, n, self.spec, self.output_name, header_length)


@dataclass(frozen=True, slots=True)
class KServeV1Codec:
    spec: ScoreSpec

    def encode(self, x: np.ndarray) -> Encoded:
        return encode_kserve_v1(x), None

    def decode(self, body: bytes, n: int, header_length: str | None = None) -> np.ndarray:
        return decode_kserve_v1(body, n, self.spec)

    def decode_typed(
        self, body: bytes, n: int, header_length: str | None = None
    ) -> tuple[np.ndarray, str | None]:
        return self.decode(body, n), None


@dataclass(frozen=True, slots=True)
class GenericCodec:
    template_parts: tuple[bytes, ...]
    steps: tuple[PathStep, ...]
    path: str
    spec: ScoreSpec

    def encode(self, x: np.ndarray) -> Encoded:
        return encode_generic(x, self.template_parts), None

    def decode(self, body: bytes, n: int, header_length: str | None = None) -> np.ndarray:
        return decode_generic(body, n, self.spec, self.steps, self.path)

    def decode_typed(
        self, body: bytes, n: int, header_length: str | None = None
    ) -> tuple[np.ndarray, str | None]:
        return self.decode(body, n), None


def make_codec(model: ModelConfig) -> Codec:
    """The codec for a model's upstream protocol; config errors raise ``ValueError`` here."""
    cfg: UpstreamConfig = model.upstream
    spec = ScoreSpec.of(model)
    if cfg.protocol is WireProtocol.OIP_V2:
        return OipV2Codec(cfg.input_name, cfg.output_name, spec, cfg.binary_data)
    if cfg.protocol is WireProtocol.KSERVE_V1:
        return KServeV1Codec(spec)
    if cfg.request_template is None or cfg.response_path is None:  # settings validate this too
        raise ValueError("generic protocol needs request_template and response_path")
    return GenericCodec(
        tuple(split_template(cfg.request_template)),
        parse_path(cfg.response_path),
        cfg.response_path,
        spec,
    )
