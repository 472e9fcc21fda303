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
def gateway(upstream_url: str, **upstream: object) -> Iterator[str]:
    """A gateway under uvicorn on a loopback port (own Redis prefix, removed afterwards)."""
    with (
        own_prefix() as prefix,
        running_server(create_app(make_settings(prefix, upstream_url, **upstream))) as url,
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


@pytest.mark.parametrize("version", ["1", "42"])
def test_a_model_version_is_served_as_the_one_version(
    triton: httpclient.InferenceServerClient, reference: dict[bool, np.ndarray], version: str
) -> None:
    """``model_version`` makes the client call ``/v2/models/{m}/versions/{v}/…``: any version
    is the model's one version (the answer's ``model_version`` names the revision served)."""
    assert triton.is_model_ready(MODEL, version, headers=auth())
    meta = triton.get_model_metadata(MODEL, version, headers=auth())
    assert meta == triton.get_model_metadata(MODEL, headers=auth())
    result = triton.infer(
        MODEL, [x_input(ROWS, "FP32", True)], model_version=version, headers=auth()
    )
    np.testing.assert_allclose(result.as_numpy("logits"), reference[False], rtol=1e-6)
    assert result.get_response()["model_version"] == meta["versions"][0]


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


@pytest.mark.parametrize("declared", [None, "FP16", "FP64"])
def test_answers_carry_the_declared_output_datatype(
    recording_upstream: RecordingUpstream, declared: str | None
) -> None:
    """An FP64 upstream: answers and metadata carry ``upstream.output_datatype`` when it is
    set, the upstream's scores cast to it; unset, the answers keep the upstream's FP64 and the
    metadata (which cannot know it before a call) says FP32."""
    upstream = {} if declared is None else {"output_datatype": declared}
    datatype = declared or "FP64"
    with gateway(recording_upstream.url, **upstream) as address:
        client = httpclient.InferenceServerClient(address)
        try:
            meta = client.get_model_metadata(MODEL, headers=auth())
            logits = infer(client, [x_input(ROWS, "FP16", True)]).as_numpy("logits")
        finally:
            client.close()
    assert meta["outputs"][0]["datatype"] == (declared or "FP32")
    assert logits.dtype == OIP_DATATYPES[datatype]
    rtol = {"FP16": 1e-3, "FP32": 1e-6, "FP64": 1e-12}[datatype]
    margin = logits[:, 0].astype(np.float64) - logits[:, 1]
    np.testing.assert_allclose(margin, ROWS.sum(axis=1) / 50, rtol=rtol)
