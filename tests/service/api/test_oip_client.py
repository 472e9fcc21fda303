"""A real Open Inference Protocol client — Triton's ``tritonclient.http``, at its default
settings (binary tensor data both ways) — against a real gateway on loopback in front of the
stand-in black box: every datatype binary and JSON, BYTES side inputs, the requested outputs,
metadata and readiness, and errors as the client parses them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest

from service.api.app import create_app
from tests.servers import running_server
from tests.service.api.conftest import (
    MODEL,
    OIP_DATATYPES,
    PREDICT,
    RecordingUpstream,
    make_settings,
    own_prefix,
)

httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

ROWS = np.array([[25, 3, 0, 0, 1, 1, 1], [45, 0, 0, 0, 0, 0, 0]])


@contextmanager
def gateway(upstream_url: str) -> Iterator[str]:
    """A gateway under uvicorn on a loopback port (own Redis prefix, removed afterwards)."""
    with (
        own_prefix() as prefix,
        running_server(create_app(make_settings(prefix, upstream_url))) as url,
    ):
        yield url.removeprefix("http://")


@pytest.fixture(scope="module")
def triton(blackbox_url: str) -> Iterator[httpclient.InferenceServerClient]:
    with gateway(blackbox_url) as address:
        client = httpclient.InferenceServerClient(address)
        yield client
        client.close()


def auth() -> dict[str, str]:
    """A fresh headers dict per call: the client writes Inference-Header-Content-Length into
    the dict it is given, which a shared one would carry into the next (JSON) request."""
    return dict(PREDICT)


def infer(client, inputs, outputs=None):
    return client.infer(MODEL, inputs, outputs=outputs, headers=auth())


def x_input(values: np.ndarray, datatype: str, binary: bool) -> httpclient.InferInput:
    tensor = httpclient.InferInput("x", list(values.shape), datatype)
    tensor.set_data_from_numpy(values.astype(OIP_DATATYPES[datatype]), binary_data=binary)
    return tensor


@pytest.fixture(scope="module")
def reference(triton: httpclient.InferenceServerClient) -> dict[bool, np.ndarray]:
    """The gateway's logits for ROWS (FP32, JSON), and for ROWS > 0 (the BOOL rows)."""
    return {
        boolean: infer(
            triton, [x_input((ROWS > 0) if boolean else ROWS, "FP32", binary=False)]
        ).as_numpy("logits")
        for boolean in (False, True)
    }


def test_health_metadata_and_readiness(triton: httpclient.InferenceServerClient) -> None:
    assert triton.is_server_live() and triton.is_server_ready()
    assert "binary_tensor_data" in triton.get_server_metadata(headers=auth())["extensions"]
    assert triton.is_model_ready(MODEL, headers=auth())
    meta = triton.get_model_metadata(MODEL, headers=auth())
    assert meta["inputs"][0] == {"name": "x", "datatype": "FP32", "shape": [-1, 7]}
    assert meta["outputs"][0]["name"] == "logits"


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("datatype", list(OIP_DATATYPES))
def test_every_datatype_round_trips(
    triton: httpclient.InferenceServerClient,
    reference: dict[bool, np.ndarray],
    datatype: str,
    binary: bool,
) -> None:
    boolean = datatype == "BOOL"
    rows = (ROWS > 0) if boolean else ROWS
    # Default outputs: the client asks for every output as binary (binary_data_output).
    got = infer(triton, [x_input(rows, datatype, binary)]).as_numpy("logits")
    assert got.dtype == np.float32 and got.shape == (2, 2)
    np.testing.assert_allclose(got, reference[boolean], rtol=1e-6)
    outputs = [httpclient.InferRequestedOutput("logits", binary_data=binary)]
    got = infer(triton, [x_input(rows, datatype, binary)], outputs).as_numpy("logits")
    np.testing.assert_allclose(got, reference[boolean], rtol=1e-6)


def test_bytes_side_input_and_raw_output(
    triton: httpclient.InferenceServerClient, reference: dict[bool, np.ndarray]
) -> None:
    tag = httpclient.InferInput("tag", [2], "BYTES")
    tag.set_data_from_numpy(np.array([b"order-1", b""], dtype=object), binary_data=True)
    outputs = [
        httpclient.InferRequestedOutput("raw_logits", binary_data=False),
        httpclient.InferRequestedOutput("logits", binary_data=True),
    ]
    result = infer(triton, [tag, x_input(ROWS, "FP32", True)], outputs)
    np.testing.assert_allclose(result.as_numpy("logits"), reference[False], rtol=1e-6)
    np.testing.assert_allclose(result.as_numpy("raw_logits"), reference[False], rtol=1e-6)
    assert result.get_response()["parameters"]["debiased"] is False


def test_errors_are_parsed_by_the_client(triton: httpclient.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as bad_shape:
        infer(triton, [x_input(ROWS[:, :6], "FP32", True)])
    assert bad_shape.value.status() == "400" and "model expects" in bad_shape.value.message()
    with pytest.raises(InferenceServerException) as unknown:
        triton.infer("nope", [x_input(ROWS, "FP32", True)], headers=auth())
    assert unknown.value.status() == "404" and "unknown model" in unknown.value.message()
    with pytest.raises(InferenceServerException) as wrong_key:
        triton.infer(
            MODEL, [x_input(ROWS, "FP32", True)], headers={"Authorization": "Bearer x"}
        )  # fresh
    assert wrong_key.value.status() == "403"
    with pytest.raises(InferenceServerException) as bad_output:
        infer(triton, [x_input(ROWS, "FP32", True)], [httpclient.InferRequestedOutput("nope")])
    assert bad_output.value.status() == "400" and "unknown output" in bad_output.value.message()
    with pytest.raises(InferenceServerException) as not_finite:
        infer(triton, [x_input(np.full((2, 7), np.inf), "FP64", True)])
    assert "NaN or infinity" in not_finite.value.message()


def test_the_upstreams_fp64_reaches_the_client(recording_upstream: RecordingUpstream) -> None:
    with gateway(recording_upstream.url) as address:
        client = httpclient.InferenceServerClient(address)
        try:
            logits = infer(client, [x_input(ROWS, "FP16", True)]).as_numpy("logits")
        finally:
            client.close()
    assert logits.dtype == np.float64
    np.testing.assert_allclose(logits[:, 0] - logits[:, 1], ROWS.sum(axis=1) / 50, rtol=1e-12)
