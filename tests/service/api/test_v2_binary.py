"""The binary tensor data extension on ``POST /v2/models/{m}/infer``, from its specification
(Triton's ``extension_binary_data.md``, which KServe adopted): a JSON header of
``Inference-Header-Content-Length`` bytes, then each binary input's bytes in ``inputs`` order,
little-endian, row-major; BOOL one byte; BYTES a 4-byte length before each element. Answers
with a binary output carry the same header and ``application/octet-stream``."""

from __future__ import annotations

import httpx
import numpy as np
import orjson
import pytest

from service.api.app import create_app
from tests.service.api.conftest import MODEL, PREDICT, asgi_client, make_settings

URL = f"/v2/models/{MODEL}/infer"
ROWS = np.array([[25, 3, 0, 0, 1, 1, 1], [45, 0, 0, 0, 0, 0, 0]])
HEADER = "Inference-Header-Content-Length"
DTYPES = {
    "BOOL": "|b1",
    "INT8": "<i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "UINT8": "<u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
}


def binary_request(
    tensors: list[tuple[str, str, np.ndarray, bool]], **doc: object
) -> tuple[bytes, dict[str, str]]:
    """Body and headers for inputs (name, datatype, values, as binary?), as a client builds them."""
    inputs, blobs = [], []
    for name, datatype, values, binary in tensors:
        entry: dict = {"name": name, "shape": list(values.shape), "datatype": datatype}
        if binary:
            blob = np.ascontiguousarray(values, dtype=DTYPES[datatype]).tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = values.reshape(-1).tolist()
        inputs.append(entry)
    header = orjson.dumps({"inputs": inputs, **doc})
    headers = {**PREDICT, "Content-Type": "application/octet-stream", HEADER: str(len(header))}
    return header + b"".join(blobs), headers


def read_answer(r: httpx.Response) -> dict[str, np.ndarray]:
    """Every output of an answer, JSON or binary, by name."""
    assert r.status_code == 200, r.text
    length = r.headers.get(HEADER)
    body = r.content
    if length is None:
        assert r.headers["content-type"] == "application/json"
        doc, rest = orjson.loads(body), b""
    else:
        assert r.headers["content-type"] == "application/octet-stream"
        doc, rest = orjson.loads(body[: int(length)]), body[int(length) :]
    out, offset = {}, 0
    for o in doc["outputs"]:
        dtype = np.dtype(DTYPES[o["datatype"]])
        size = (o.get("parameters") or {}).get("binary_data_size")
        if size is None:
            out[o["name"]] = np.asarray(o["data"], dtype=dtype).reshape(o["shape"])
        else:
            out[o["name"]] = np.frombuffer(rest[offset : offset + size], dtype).reshape(o["shape"])
            offset += size
    assert offset == len(rest)
    return out


async def json_logits(client: httpx.AsyncClient, rows: np.ndarray) -> np.ndarray:
    body = {
        "inputs": [
            {"name": "x", "shape": list(rows.shape), "datatype": "FP32", "data": rows.tolist()}
        ]
    }
    return read_answer(await client.post(URL, headers=PREDICT, json=body))["logits"]


@pytest.mark.parametrize("datatype", list(DTYPES))
async def test_every_numeric_datatype_as_binary_input_and_output(
    client: httpx.AsyncClient, datatype: str
) -> None:
    rows = (ROWS > 0) if datatype == "BOOL" else ROWS
    body, headers = binary_request(
        [("x", datatype, rows, True)], parameters={"binary_data_output": True}
    )
    r = await client.post(URL, content=body, headers=headers)
    answer = read_answer(r)
    assert int(r.headers[HEADER]) < len(r.content)
    expected = await json_logits(client, rows.astype(np.float32))
    np.testing.assert_allclose(answer["logits"], expected, rtol=1e-6)
    assert answer["logits"].dtype == np.float32  # the stand-in answers FP32


@pytest.mark.parametrize("datatype", list(DTYPES))
async def test_every_numeric_datatype_as_json_input(
    client: httpx.AsyncClient, datatype: str
) -> None:
    rows = (ROWS > 0) if datatype == "BOOL" else ROWS
    values = (
        rows.tolist() if datatype not in ("FP16", "FP32", "FP64") else rows.astype(float).tolist()
    )
    body = {"inputs": [{"name": "x", "shape": [2, 7], "datatype": datatype, "data": values}]}
    answer = read_answer(await client.post(URL, headers=PREDICT, json=body))
    expected = await json_logits(client, rows.astype(np.float32))
    np.testing.assert_allclose(answer["logits"], expected, rtol=1e-6)


async def test_mixed_json_and_binary_inputs_and_outputs(client: httpx.AsyncClient) -> None:
    """A JSON side input before the binary model input, one output binary and one JSON."""
    tag = np.array([7, 8])
    body, headers = binary_request(
        [("tag", "INT32", tag, False), ("x", "FP32", ROWS, True)],
        outputs=[{"name": "logits", "parameters": {"binary_data": True}}, {"name": "raw_logits"}],
    )
    r = await client.post(URL, content=body, headers=headers)
    answer = read_answer(r)
    header = orjson.loads(r.content[: int(r.headers[HEADER])])
    assert [o["name"] for o in header["outputs"]] == ["logits", "raw_logits"]
    assert "data" not in header["outputs"][0] and "data" in header["outputs"][1]
    expected = await json_logits(client, ROWS.astype(np.float32))
    np.testing.assert_allclose(answer["logits"], expected, rtol=1e-6)
    np.testing.assert_allclose(answer["raw_logits"], expected, rtol=1e-6)  # no active patch


async def test_binary_output_on_a_json_request_and_per_output_override(
    client: httpx.AsyncClient,
) -> None:
    body = {
        "inputs": [{"name": "x", "shape": [2, 7], "datatype": "FP32", "data": ROWS.tolist()}],
        "outputs": [{"name": "raw_logits", "parameters": {"binary_data": False}}],
        "parameters": {"binary_data_output": True, "return_raw": True},
    }
    r = await client.post(URL, headers=PREDICT, json=body)
    assert HEADER not in r.headers  # the only output asked for is JSON
    assert list(read_answer(r)) == ["raw_logits"]
    body["outputs"] = None
    r = await client.post(URL, headers=PREDICT, json=body)
    assert list(read_answer(r)) == ["logits", "raw_logits"] and HEADER in r.headers


async def test_header_without_binary_inputs_is_plain_json(client: httpx.AsyncClient) -> None:
    body, headers = binary_request([("x", "FP32", ROWS, False)])
    r = await client.post(URL, content=body, headers=headers)
    assert read_answer(r)["logits"].shape == (2, 2)


def _with_blob(header: dict, blob: bytes, length: str | None = None) -> tuple[bytes, dict]:
    doc = orjson.dumps(header)
    headers = {**PREDICT, HEADER: str(len(doc)) if length is None else length}
    return doc + blob, headers


FP32_BYTES = ROWS.astype("<f4").tobytes()


def _doc(size: int, datatype: str = "FP32", shape: list[int] | None = None, **extra) -> dict:
    tensor = {
        "name": "x",
        "shape": shape or [2, 7],
        "datatype": datatype,
        "parameters": {"binary_data_size": size},
        **extra,
    }
    return {"inputs": [tensor]}


MALFORMED = {
    "header not a number": (_doc(56), FP32_BYTES, "abc", "must be a non-negative number"),
    "header negative": (_doc(56), FP32_BYTES, "-5", "must be a non-negative number"),
    "header past the body": (_doc(56), FP32_BYTES, "99999", "the body has only"),
    "header too long a number": (_doc(56), FP32_BYTES, "9" * 40, "must be a non-negative"),
    "header cuts the JSON": (_doc(56), FP32_BYTES, "10", "body"),
    "size not shape x itemsize": (_doc(52), FP32_BYTES[:52], None, "is 56 bytes"),
    "size past the body": (_doc(60), FP32_BYTES, None, "runs past the end of the body"),
    "trailing bytes": (_doc(56), FP32_BYTES + b"\0\0\0\0", None, "4 bytes of binary data"),
    "size not an integer": (_doc("56"), FP32_BYTES, None, "non-negative integer"),  # type: ignore[arg-type]
    "size negative": (_doc(-1), FP32_BYTES, None, "non-negative integer"),
    "both data and size": (_doc(56, data=[1] * 14), FP32_BYTES, None, "both 'data'"),
    "BOOL byte not 0 or 1": (_doc(14, "BOOL"), bytes([2] * 14), None, "must be 0 or 1"),
    "unknown datatype": (_doc(56, "FP8"), FP32_BYTES, None, "unknown datatype"),
    "negative dimension": (_doc(56, shape=[-2, 7]), FP32_BYTES, None, "negative dimension"),
    "BYTES model input": (_doc(8 * 14, "BYTES"), b"".join([b"\x04\0\0\0abcd"] * 14), None, "takes"),
    "BYTES framing cut": (_doc(10, "BYTES", shape=[2]), b"\x04\0\0\0abcd\x09\0", None, "cut short"),
    "BYTES element past its data": (
        _doc(8, "BYTES", shape=[1]),
        b"\x09\0\0\0abcd",
        None,
        "runs past",
    ),
}


@pytest.mark.parametrize("case", list(MALFORMED))
async def test_malformed_binary_requests_are_400_with_the_protocol_body(
    client: httpx.AsyncClient, case: str
) -> None:
    doc, blob, length, reason = MALFORMED[case]
    content, headers = _with_blob(doc, blob, length)
    r = await client.post(URL, content=content, headers=headers)
    assert r.status_code == 400, r.text
    assert list(r.json()) == ["error"] and reason in r.json()["error"], r.json()


async def test_binary_size_without_the_header_is_400(client: httpx.AsyncClient) -> None:
    r = await client.post(URL, content=orjson.dumps(_doc(56)) + FP32_BYTES, headers=PREDICT)
    assert r.status_code == 400 and isinstance(r.json()["error"], str)
    r = await client.post(URL, content=orjson.dumps(_doc(0, shape=[0, 7])), headers=PREDICT)
    assert r.status_code == 400 and "header" in r.json()["error"]


async def test_bytes_side_input_is_parsed_and_not_used(client: httpx.AsyncClient) -> None:
    """BYTES applies to inputs the model does not take (e.g. a caller's tag): framed and
    checked, then ignored; the model's own input must be numeric."""
    tags = b"\x02\0\0\0ab" + b"\x00\0\0\0"
    doc = {
        "inputs": [
            {
                "name": "tag",
                "shape": [2],
                "datatype": "BYTES",
                "parameters": {"binary_data_size": len(tags)},
            },
            {
                "name": "x",
                "shape": [2, 7],
                "datatype": "FP32",
                "parameters": {"binary_data_size": 56},
            },
        ]
    }
    content, headers = _with_blob(doc, tags + FP32_BYTES)
    assert read_answer(await client.post(URL, content=content, headers=headers))[
        "logits"
    ].shape == (2, 2)
    doc["inputs"][0] = {"name": "tag", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]}
    content, headers = _with_blob(doc, FP32_BYTES)
    assert (await client.post(URL, content=content, headers=headers)).status_code == 200


async def test_json_data_must_match_its_datatype(client: httpx.AsyncClient) -> None:
    for datatype, data, reason in [
        ("INT8", [300] * 14, "not a INT8 array"),
        ("UINT8", [-1] * 14, "not a UINT8 array"),
        ("INT32", [1.5] * 14, "must be JSON integers"),
        ("BOOL", [1] * 14, "must be JSON booleans"),
        ("FP32", [True] * 14, "must be JSON"),
    ]:
        body = {"inputs": [{"name": "x", "shape": [2, 7], "datatype": datatype, "data": data}]}
        r = await client.post(URL, headers=PREDICT, json=body)
        assert r.status_code == 400 and reason in r.json()["error"], (datatype, r.text)


async def test_unknown_requested_output_is_400(client: httpx.AsyncClient) -> None:
    body = {
        "inputs": [{"name": "x", "shape": [2, 7], "datatype": "FP32", "data": ROWS.tolist()}],
        "outputs": [{"name": "probabilities"}],
    }
    r = await client.post(URL, headers=PREDICT, json=body)
    assert r.status_code == 400 and "unknown output 'probabilities'" in r.json()["error"]


async def test_a_datatype_the_model_does_not_allow_is_400(
    key_prefix: str, blackbox_url: str, redis_client: object
) -> None:
    settings = make_settings(key_prefix, blackbox_url)
    settings.models[0].input.datatypes = ["FP32"]
    async with asgi_client(create_app(settings)) as c:
        meta = (await c.get(f"/v2/models/{MODEL}", headers=PREDICT)).json()
        assert meta["parameters"]["input_datatypes"] == ["FP32"]
        body, headers = binary_request([("x", "INT64", ROWS, True)])
        r = await c.post(URL, content=body, headers=headers)
    assert r.status_code == 400 and "this model takes ['FP32']" in r.json()["error"]


# ---- an upstream that answers FP64 (tests.service.api.conftest.recording_client) --------


async def test_the_answer_keeps_the_upstreams_fp64(recording_client: httpx.AsyncClient) -> None:
    body, headers = binary_request(
        [("x", "FP16", ROWS, True)], parameters={"binary_data_output": True}
    )
    answer = read_answer(await recording_client.post(URL, content=body, headers=headers))
    assert answer["logits"].dtype == np.float64
    sums = ROWS.sum(axis=1) / 100
    margin = answer["logits"][:, 0] - answer["logits"][:, 1]  # logits, up to a shift per row
    np.testing.assert_allclose(margin, 2 * sums, rtol=1e-12)
    json_answer = await recording_client.post(
        URL,
        headers=PREDICT,
        json={
            "inputs": [{"name": "x", "shape": [2, 7], "datatype": "INT16", "data": ROWS.tolist()}]
        },
    )
    assert json_answer.json()["outputs"][0]["datatype"] == "FP64"
