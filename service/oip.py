"""Open Inference Protocol v2 tensors: datatypes, JSON data and the binary tensor data extension.

No I/O and no HTTP: the v2 route hands in the body and the ``Inference-Header-Content-Length``
header, and gets numpy arrays back; answers go the other way. Every malformed tensor is an
``InvalidTensor`` (400) that says what is wrong, never an exception from numpy.

Binary tensor data (Triton's extension, which KServe and the Triton clients use by default):
the body is a JSON header of ``Inference-Header-Content-Length`` bytes followed by the raw data
of each input that has ``parameters.binary_data_size``, in the order of ``inputs``: little
endian, row major, no padding; BOOL one byte (0 or 1) per element; BYTES each element a 4-byte
little-endian length and its bytes. Sizes are checked against the shape and the body before a
byte is read, and bytes left over after the last binary input are refused.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import numpy as np
import orjson

from service.errors import InvalidTensor

HEADER_LENGTH: Final = "Inference-Header-Content-Length"
BYTES: Final = "BYTES"
# The numeric OIP datatypes and their little-endian numpy layout (BOOL: one byte, 0 or 1).
NUMERIC: Final[dict[str, np.dtype]] = {
    "BOOL": np.dtype(np.bool_),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
FLOATS: Final = frozenset({"FP16", "FP32", "FP64"})
_MAX_HEADER_DIGITS: Final = 18  # int() of a longer string could be slow; no body is that long
_BYTES_PREFIX: Final = 4
_DUMPS: Final = orjson.OPT_SERIALIZE_NUMPY


class Tensor(Protocol):
    """An input tensor as the request's JSON gives it (``service.api.schemas.V2Tensor``)."""

    name: str
    shape: list[int]
    datatype: str
    data: list[Any] | None
    parameters: dict[str, Any] | None


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, memoryview]:
    """(JSON header, binary tensor data). Without the header the whole body is JSON."""
    if header_length is None:
        return body, memoryview(b"")
    text = header_length.strip()
    if not (text.isascii() and text.isdigit() and len(text) <= _MAX_HEADER_DIGITS):
        raise InvalidTensor(
            f"{HEADER_LENGTH} must be a non-negative number of bytes, not {header_length[:40]!r}"
        )
    length = int(text)
    if length > len(body):
        raise InvalidTensor(f"{HEADER_LENGTH} is {length} but the body has only {len(body)} bytes")
    return body[:length], memoryview(body)[length:]


def decode_inputs(tensors: Sequence[Tensor], binary: memoryview, has_header: bool) -> list[Any]:
    """Every input as a numpy array of its shape: numeric datatypes in their own dtype, BYTES as
    an object array of ``bytes``. ``binary`` is what followed the JSON header."""
    arrays = []
    offset = 0
    for t in tensors:
        shape = _shape(t)
        size = binary_data_size(t.parameters, f"input {t.name!r}")
        if size is None:
            arrays.append(_from_json(t, shape))
            continue
        if not has_header:
            raise InvalidTensor(
                f"input {t.name!r} has parameters.binary_data_size but the request has no "
                f"{HEADER_LENGTH} header"
            )
        if t.data is not None:
            raise InvalidTensor(f"input {t.name!r} has both 'data' and binary_data_size")
        left = len(binary) - offset
        if size > left:
            raise InvalidTensor(
                f"input {t.name!r}: binary_data_size {size} runs past the end of the body "
                f"({left} bytes of binary data left)"
            )
        arrays.append(_from_bytes(t, shape, binary[offset : offset + size]))
        offset += size
    if offset != len(binary):
        raise InvalidTensor(
            f"{len(binary) - offset} bytes of binary data follow the last binary input "
            "(binary_data_size of the inputs does not add up to the body)"
        )
    return arrays


def decode_raw(t: Tensor, data: bytes | memoryview, what: str = "input") -> Any:
    """One tensor from its raw bytes in the layout above, all of ``data``: a gRPC
    ``raw_input_contents`` entry, or a binary output of an upstream's answer (``what`` names
    the tensor's role in messages)."""
    return _from_bytes(t, _shape(t, what), memoryview(data), what)


def raw_bytes(out: Output) -> bytes:
    """An output's values in the binary layout (a binary output, gRPC ``raw_output_contents``)."""
    return np.ascontiguousarray(out.values, dtype=NUMERIC[out.datatype]).tobytes()


def _shape(t: Tensor, what: str = "input") -> list[int]:
    if any(d < 0 for d in t.shape):
        raise InvalidTensor(f"{what} {t.name!r} has a negative dimension in shape {t.shape}")
    if t.datatype != BYTES and t.datatype not in NUMERIC:
        known = [*NUMERIC, BYTES]
        raise InvalidTensor(
            f"{what} {t.name!r} has unknown datatype {t.datatype!r}; one of {known}"
        )
    return t.shape


def binary_data_size(parameters: object, what: str) -> int | None:
    """A tensor's ``parameters.binary_data_size`` (a request's input or an answer's output):
    None when it has none (its values are JSON ``data``); ``what`` names the tensor."""
    size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
    if size is None:
        return None
    if type(size) is not int or size < 0:
        raise InvalidTensor(
            f"{what}: binary_data_size must be a non-negative integer, not {size!r:.40}"
        )
    return size


def _from_bytes(t: Tensor, shape: list[int], data: memoryview, what: str = "input") -> Any:
    count = math.prod(shape)
    if t.datatype == BYTES:
        return _split_bytes(f"{what} {t.name!r}", data, count).reshape(shape)
    dtype = NUMERIC[t.datatype]
    needed = count * dtype.itemsize
    if len(data) != needed:
        raise InvalidTensor(
            f"{what} {t.name!r}: {len(data)} bytes of binary data but shape {shape} of "
            f"{t.datatype} is {needed} bytes"
        )
    if t.datatype == "BOOL":
        raw = np.frombuffer(data, dtype=np.uint8)
        if (raw > 1).any():
            raise InvalidTensor(f"{what} {t.name!r}: BOOL bytes must be 0 or 1")
        return raw.astype(np.bool_).reshape(shape)
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def _split_bytes(name: str, data: memoryview, count: int) -> np.ndarray:
    """BYTES elements: each a 4-byte little-endian length and that many bytes, exactly filling
    ``data`` with ``count`` elements. ``name`` says which tensor, e.g. ``input 'tag'``."""
    elements = []
    offset = 0
    while offset < len(data):
        if len(data) - offset < _BYTES_PREFIX:
            raise InvalidTensor(f"{name}: BYTES element {len(elements)} is cut short")
        size = int.from_bytes(data[offset : offset + _BYTES_PREFIX], "little")
        offset += _BYTES_PREFIX
        if size > len(data) - offset:
            raise InvalidTensor(
                f"{name}: BYTES element {len(elements)} of {size} bytes runs past its binary data"
            )
        elements.append(bytes(data[offset : offset + size]))
        offset += size
        if len(elements) > count:
            break
    if len(elements) != count:
        raise InvalidTensor(f"{name}: {len(elements)} BYTES elements, shape needs {count}")
    array = np.empty(count, dtype=object)
    array[:] = elements
    return array


def _from_json(t: Tensor, shape: list[int]) -> Any:
    if t.data is None:
        raise InvalidTensor(f"input {t.name!r} has neither 'data' nor binary_data_size")
    leaves = _LEAF_TYPES[_kind(t.datatype)]
    if not _leaves_are(t.data, leaves):
        names = " or ".join(sorted(_TYPE_NAMES[k] for k in leaves))
        raise InvalidTensor(f"input {t.name!r}: {t.datatype} data must be JSON {names}")
    try:
        if t.datatype == BYTES:
            flat = list(_flatten(t.data))
            array = np.empty(len(flat), dtype=object)
            array[:] = [s.encode() for s in flat]
        else:
            with np.errstate(over="ignore"):
                array = np.asarray(t.data, dtype=NUMERIC[t.datatype])
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidTensor(f"input {t.name!r}: data is not a {t.datatype} array: {exc}") from None
    count = math.prod(shape)
    if array.size != count:
        raise InvalidTensor(
            f"input {t.name!r}: data ({array.size} values) does not fill shape {shape}"
        )
    return array.reshape(shape)


def _kind(datatype: str) -> str:
    if datatype in FLOATS:
        return "float"
    if datatype == "BOOL" or datatype == BYTES:
        return datatype
    return "int"


_LEAF_TYPES: Final = {
    "float": frozenset({int, float}),  # exact types: bool is a subclass of int
    "int": frozenset({int}),
    "BOOL": frozenset({bool}),
    BYTES: frozenset({str}),
}
_TYPE_NAMES: Final = {int: "integers", float: "numbers", bool: "booleans", str: "strings"}


def _leaves_are(node: Any, types: frozenset[type]) -> bool:
    """Every leaf of nested lists is exactly one of ``types`` (one C-speed pass per row)."""
    if type(node) is not list:
        return type(node) in types
    if node and type(node[0]) is list:
        return all(_leaves_are(child, types) for child in node)
    return set(map(type, node)) <= types


def _flatten(node: Any) -> Any:
    if type(node) is list:
        for child in node:
            yield from _flatten(child)
    else:
        yield node


# --------------------------------------------------------------------------------------------
# Answers
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Output:
    """One output tensor of an answer: values cast to ``datatype`` (numeric), JSON or binary."""

    name: str
    values: np.ndarray
    datatype: str
    binary: bool


def encode_answer(doc: dict[str, Any], outputs: Sequence[Output]) -> tuple[bytes, int | None]:
    """(body, JSON header length or None): ``doc`` with ``outputs`` as its ``outputs`` list,
    binary ones after the JSON. The length is None when every output is JSON."""
    entries = []
    blobs = []
    for out in outputs:
        values = np.ascontiguousarray(out.values, dtype=NUMERIC[out.datatype])
        entry: dict[str, Any] = {
            "name": out.name,
            "shape": list(values.shape),
            "datatype": out.datatype,
        }
        if out.binary:
            blob = values.tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = values.reshape(-1)
        entries.append(entry)
    header = orjson.dumps({**doc, "outputs": entries}, option=_DUMPS)
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)
