"""The OIP v2 gRPC service, tested with Triton's ``tritonclient.grpc`` at its defaults (inputs
and outputs as raw contents) against a real gateway — HTTP and gRPC on loopback ports, one
event loop (uvloop, as ``eraser-gateway serve`` runs it) — in front of the stand-in: every RPC,
every numeric datatype, the fair answer equal to the HTTP v2 route's, keys checked before the
message is decoded, errors as status codes, the metrics counted with ``route="grpc"``, and
the message size limit. Malformed requests the client library would not build go through the
generated stub (``tritonclient.grpc.service_pb2_grpc``) directly."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import numpy as np
import orjson
import pytest

from deploy.local.processes import free_port, launched
from service.api.app import create_app
from service.metrics import GatewayMetrics
from service.settings import GrpcSettings, LimitSettings
from tests.servers import running_server
from tests.service.api.conftest import (
    ADMIN,
    MODEL,
    OIP_DATATYPES,
    PREDICT,
    PREDICT_KEY,
    make_settings,
    own_prefix,
    patch_manifest,
    random_patch,
    serve_env,
)

grpcclient = pytest.importorskip("tritonclient.grpc")
httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.grpc import service_pb2 as pb  # noqa: E402
from tritonclient.grpc import service_pb2_grpc as pb_grpc  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

KEY = {"authorization": f"Bearer {PREDICT_KEY}"}
LIMIT_MB = 0.25
ROWS = np.array([[25, 3, 0, 0, 1, 1, 1], [45, 0, 0, 0, 0, 0, 0], [19, 7, 1, 2, 0, 1, 0]])


@dataclass
class Gateway:
    http: str  # host:port
    grpc: str
    metrics: GatewayMetrics


@pytest.fixture(scope="module")
def gateway(blackbox_url: str) -> Iterator[Gateway]:
    """A gateway with a patch active (so the fair answer differs from the raw one)."""
    with own_prefix() as prefix:
        settings = make_settings(prefix, blackbox_url)
        settings.grpc = GrpcSettings(port=0)
        settings.limits = LimitSettings(predict_body_mb=LIMIT_MB)
        metrics = GatewayMetrics()
        app = create_app(settings, metrics)
        with running_server(app, loop="uvloop") as url:
            activate_a_patch(url)
            yield Gateway(url.removeprefix("http://"), f"127.0.0.1:{app.state.grpc_port}", metrics)


def activate_a_patch(url: str) -> None:
    with httpx.Client(base_url=url, timeout=10) as admin:
        response = admin.post(
            "/patches/p/versions",
            headers=ADMIN,
            data={"manifest": orjson.dumps(patch_manifest()).decode()},
            files={"artifact": ("patch.onnx", random_patch(1), "application/octet-stream")},
        )
        assert response.status_code == 201, response.text
        entries = [{"patch": "p", "version": 1, "alpha": 1.0}]
        response = admin.put(
            f"/models/{MODEL}/stack",
            headers=ADMIN,
            json={"entries": entries, "expected_revision": 0},
        )
        assert response.status_code == 200, response.text
        deadline = time.monotonic() + 10
        while admin.get(f"/models/{MODEL}/stack", headers=ADMIN).json()["served_revision"] != 1:
            assert time.monotonic() < deadline, "the stack was not hot-loaded"
            time.sleep(0.05)


@pytest.fixture(scope="module")
def client(gateway: Gateway) -> Iterator[grpcclient.InferenceServerClient]:
    client = grpcclient.InferenceServerClient(gateway.grpc)
    yield client
    client.close()


@pytest.fixture(scope="module")
def stub(gateway: Gateway) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(gateway.grpc) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


def x_input(values: np.ndarray, datatype: str = "FP32") -> grpcclient.InferInput:
    tensor = grpcclient.InferInput("x", list(values.shape), datatype)
    tensor.set_data_from_numpy(values.astype(OIP_DATATYPES[datatype]))
    return tensor


def infer(client: grpcclient.InferenceServerClient, values: np.ndarray, datatype: str = "FP32"):
    return client.infer(MODEL, [x_input(values, datatype)], headers=KEY)


def raw_request(rows: np.ndarray, **overrides: object) -> pb.ModelInferRequest:
    """A ModelInfer request built by hand: FP32 rows as raw contents, unless overridden."""
    tensor = pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=rows.shape)
    fields: dict = {"model_name": MODEL, "inputs": [tensor]}
    fields["raw_input_contents"] = [rows.astype("<f4").tobytes()]
    return pb.ModelInferRequest(**(fields | overrides))


def status_of(call, *args, **kwargs) -> grpc.RpcError:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as failure:
        call(*args, **kwargs)
    return failure.value


# ---- every RPC ---------------------------------------------------------------------------------


def test_health_readiness_and_metadata(client: grpcclient.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()  # open, like the HTTP probes
    assert client.is_model_ready(MODEL, headers=KEY)
    server = client.get_server_metadata(headers=KEY, as_json=True)
    assert server["name"] == "eraser-gateway" and "version" in server
    meta = client.get_model_metadata(MODEL, headers=KEY, as_json=True)
    assert meta["name"] == MODEL and meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": ["-1", "7"]}]
    assert meta["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": ["-1", "2"]}]


def test_model_infer_answers_the_http_v2_routes_fair_answer(
    gateway: Gateway, client: grpcclient.InferenceServerClient
) -> None:
    result = infer(client, ROWS)
    response = result.get_response(as_json=True)
    assert response["model_name"] == MODEL and response["model_version"] == "1"
    parameters = response["parameters"]
    assert parameters["eraser_revision"] == {"int64_param": "1"}
    assert parameters["debiased"] == {"bool_param": True}
    assert orjson.loads(parameters["patches"]["string_param"]) == [
        {"name": "p", "version": 1, "alpha": 1.0}
    ]
    assert response["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": ["3", "2"]}]
    http = httpclient.InferenceServerClient(gateway.http)
    try:
        tensor = httpclient.InferInput("x", [3, 7], "FP32")
        tensor.set_data_from_numpy(ROWS.astype(np.float32))
        via_http = http.infer(MODEL, [tensor], headers=dict(PREDICT))
    finally:
        http.close()
    np.testing.assert_array_equal(result.as_numpy("logits"), via_http.as_numpy("logits"))
    assert via_http.get_response()["parameters"]["eraser_revision"] == 1


@pytest.mark.parametrize("version", ["1", "42"])
def test_a_model_version_is_served_as_the_one_version(
    client: grpcclient.InferenceServerClient, version: str
) -> None:
    """As on HTTP: any ``model_version`` is the model's one version; the answer's names the
    revision served."""
    assert client.is_model_ready(MODEL, version, headers=KEY)
    meta = client.get_model_metadata(MODEL, version, headers=KEY, as_json=True)
    assert meta == client.get_model_metadata(MODEL, headers=KEY, as_json=True)
    result = client.infer(MODEL, [x_input(ROWS)], model_version=version, headers=KEY)
    assert result.get_response(as_json=True)["model_version"] == "1"
    np.testing.assert_array_equal(result.as_numpy("logits"), infer(client, ROWS).as_numpy("logits"))
    with pytest.raises(InferenceServerException) as unknown:
        client.infer("nope", [x_input(ROWS)], model_version=version, headers=KEY)
    assert unknown.value.status() == "StatusCode.NOT_FOUND"


def test_raw_output_on_request(client: grpcclient.InferenceServerClient) -> None:
    fair = infer(client, ROWS).as_numpy("logits")
    outputs = [grpcclient.InferRequestedOutput(n) for n in ("raw_logits", "logits")]
    result = client.infer(MODEL, [x_input(ROWS)], outputs=outputs, headers=KEY)
    assert [o.name for o in result.get_response().outputs] == ["raw_logits", "logits"]
    np.testing.assert_array_equal(result.as_numpy("logits"), fair)
    assert not np.allclose(result.as_numpy("raw_logits"), fair)  # the patch moved it
    also = client.infer(MODEL, [x_input(ROWS)], headers=KEY, parameters={"return_raw": True})
    np.testing.assert_array_equal(also.as_numpy("raw_logits"), result.as_numpy("raw_logits"))


@pytest.mark.parametrize("datatype", list(OIP_DATATYPES))
def test_every_datatype_as_raw_contents(
    client: grpcclient.InferenceServerClient, datatype: str
) -> None:
    rows = (ROWS > 0) if datatype == "BOOL" else ROWS
    got = infer(client, rows, datatype).as_numpy("logits")
    np.testing.assert_allclose(got, infer(client, rows.astype(np.float32)).as_numpy("logits"))
    assert got.dtype == np.float32 and got.shape == (3, 2)


def test_typed_contents_answer_as_raw_contents(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    by_raw = stub.ModelInfer(raw_request(ROWS), metadata=tuple(KEY.items()))
    contents = {
        "INT32": pb.InferTensorContents(int_contents=ROWS.reshape(-1).tolist()),
        "FP64": pb.InferTensorContents(fp64_contents=ROWS.reshape(-1).tolist()),
    }
    for datatype, content in contents.items():
        tensor = pb.ModelInferRequest.InferInputTensor(
            name="x", datatype=datatype, shape=ROWS.shape, contents=content
        )
        request = pb.ModelInferRequest(model_name=MODEL, inputs=[tensor])
        typed = stub.ModelInfer(request, metadata=tuple(KEY.items()))
        assert typed.raw_output_contents == by_raw.raw_output_contents


def test_request_id_and_revision_come_back_in_trailing_metadata(
    stub: pb_grpc.GRPCInferenceServiceStub,
) -> None:
    metadata = (*KEY.items(), ("x-request-id", "order-42"))
    _, call = stub.ModelInfer.with_call(raw_request(ROWS), metadata=metadata)
    trailing = dict(call.trailing_metadata())
    assert trailing["x-request-id"] == "order-42" and trailing["x-eraser-revision"] == "1"


# ---- errors ------------------------------------------------------------------------------------


def test_keys_are_checked_before_the_message_is_decoded(gateway: Gateway) -> None:
    with grpc.insecure_channel(gateway.grpc) as channel:
        infer_bytes = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        garbage = b"\xff\xff\xff not a protobuf message"
        assert status_of(infer_bytes, garbage).code() is grpc.StatusCode.UNAUTHENTICATED
        wrong = (("authorization", "Bearer nope"),)
        failure = status_of(infer_bytes, garbage, metadata=wrong)
        assert failure.code() is grpc.StatusCode.PERMISSION_DENIED
        assert "not the prediction API key" in failure.details()
        # With the key, the same bytes reach the decoder, which refuses them.
        decoded = status_of(infer_bytes, garbage, metadata=tuple(KEY.items()))
        assert decoded.code() not in (
            grpc.StatusCode.UNAUTHENTICATED,
            grpc.StatusCode.PERMISSION_DENIED,
            grpc.StatusCode.OK,
        )


def test_auth_failures_as_the_client_reports_them(client: grpcclient.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as missing:
        client.infer(MODEL, [x_input(ROWS)])
    assert missing.value.status() == "StatusCode.UNAUTHENTICATED"
    with pytest.raises(InferenceServerException) as wrong:
        client.get_model_metadata(MODEL, headers={"authorization": "Bearer nope"})
    assert wrong.value.status() == "StatusCode.PERMISSION_DENIED"
    with pytest.raises(InferenceServerException):
        client.get_server_metadata()  # server metadata needs the key too, as GET /v2 does


def test_unknown_model(client: grpcclient.InferenceServerClient) -> None:
    for call in (
        lambda: client.infer("nope", [x_input(ROWS)], headers=KEY),
        lambda: client.get_model_metadata("nope", headers=KEY),
        lambda: client.is_model_ready("nope", headers=KEY),
    ):
        with pytest.raises(InferenceServerException) as unknown:
            call()
        assert unknown.value.status() == "StatusCode.NOT_FOUND"
        assert "unknown model 'nope'" in unknown.value.message()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"raw_input_contents": [b"\x00" * 27]}, "27 bytes of binary data but shape [3, 7]"),
        ({"raw_input_contents": [b"", b""]}, "2 raw_input_contents for 1 inputs"),
        ({"raw_input_contents": []}, "0 values in fp32_contents"),
        ({"inputs": []}, "no inputs"),
        (
            {
                "inputs": [
                    pb.ModelInferRequest.InferInputTensor(name="x", datatype="BOOL", shape=[3, 7])
                ],
                "raw_input_contents": [b"\x02" * 21],
            },
            "BOOL bytes must be 0 or 1",
        ),
        (
            {
                "inputs": [
                    pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=[3, 6])
                ],
                "raw_input_contents": [b"\x00" * 72],
            },
            "model expects [N, *[7]]",
        ),
        (
            {"outputs": [pb.ModelInferRequest.InferRequestedOutputTensor(name="nope")]},
            "unknown output 'nope'",
        ),
        (
            {"parameters": {"return_raw": pb.InferParameter(string_param="yes")}},
            "return_raw must be a bool_param",
        ),
        (
            {"raw_input_contents": [np.full((3, 7), np.inf, "<f4").tobytes()]},
            "NaN or infinity",
        ),
    ],
)
def test_malformed_requests_are_invalid_argument(
    stub: pb_grpc.GRPCInferenceServiceStub, overrides: dict, message: str
) -> None:
    failure = status_of(
        stub.ModelInfer, raw_request(ROWS, **overrides), metadata=tuple(KEY.items())
    )
    assert failure.code() is grpc.StatusCode.INVALID_ARGUMENT, failure.details()
    assert message in failure.details()
    trailing = dict(failure.trailing_metadata())
    assert trailing["x-eraser-error-code"] in {"invalid_tensor", "invalid_instances"}


def test_messages_over_the_http_body_limit_are_refused(
    stub: pb_grpc.GRPCInferenceServiceStub,
) -> None:
    rows = np.zeros((int(LIMIT_MB * 2**20) // 28 + 1, 7))
    failure = status_of(stub.ModelInfer, raw_request(rows), metadata=tuple(KEY.items()))
    assert failure.code() is grpc.StatusCode.RESOURCE_EXHAUSTED


def test_metrics_count_grpc_requests_under_their_own_route(
    gateway: Gateway, client: grpcclient.InferenceServerClient
) -> None:
    def count(route: str) -> float:
        labels = {"model": MODEL, "route": route, "outcome": "debiased"}
        return gateway.metrics.registry.get_sample_value("eraser_requests_total", labels) or 0.0

    before = count("grpc"), count("v2")
    infer(client, ROWS)
    infer(client, ROWS[:1])
    assert (count("grpc"), count("v2")) == (before[0] + 2, before[1])
    rows = gateway.metrics.registry.get_sample_value("eraser_batch_size_sum", {"model": MODEL})
    assert rows is not None and rows >= 4


# ---- eraser-gateway serve ------------------------------------------------------------------------


def test_serve_hands_the_grpc_port_and_its_host_to_the_workers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from service import cli

    for name in ("ERASER_GRPC__PORT", "ERASER_GRPC__HOST"):
        monkeypatch.setenv(name, "")  # recorded, so that what serve sets is undone afterwards
        monkeypatch.delenv(name)
    monkeypatch.setenv("ERASER_CONFIG_FILE", "/nonexistent.yaml")
    cli._configure_grpc("0.0.0.0", None)  # no --grpc-port, no grpc.port: no gRPC
    assert "ERASER_GRPC__PORT" not in os.environ and "ERASER_GRPC__HOST" not in os.environ
    cli._configure_grpc("0.0.0.0", 8001)
    assert os.environ["ERASER_GRPC__PORT"] == "8001"
    assert os.environ["ERASER_GRPC__HOST"] == "0.0.0.0"  # the HTTP bind address
    monkeypatch.setenv("ERASER_GRPC__HOST", "127.0.0.2")
    cli._configure_grpc("0.0.0.0", 8002)
    assert os.environ["ERASER_GRPC__HOST"] == "127.0.0.2"  # a configured grpc.host wins


@pytest.mark.slow  # a gateway process starts
def test_serve_runs_http_and_grpc_in_one_process(
    blackbox_url: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    port, grpc_port = free_port(), free_port()
    args = ["-m", "service.cli", "serve", "--port", str(port), "--grpc-port", str(grpc_port)]
    with own_prefix() as prefix:
        settings = make_settings(prefix, blackbox_url)
        env = serve_env(settings, Path(tmp_path_factory.mktemp("serve-grpc")) / "gateway.yaml")
        with launched(args, f"http://127.0.0.1:{port}/v2/health/live", f"test-{prefix}", env=env):
            client = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
            try:
                assert client.is_server_live()
                logits = infer(client, ROWS).as_numpy("logits")
            finally:
                client.close()
            with httpx.Client() as http:
                body = {"inputs": [{"name": "x", "shape": [3, 7], "datatype": "FP32"}]}
                body["inputs"][0]["data"] = ROWS.tolist()
                url = f"http://127.0.0.1:{port}/v2/models/{MODEL}/infer"
                answer = http.post(url, json=body, headers=PREDICT).json()
    np.testing.assert_allclose(logits.reshape(-1), answer["outputs"][0]["data"], rtol=1e-6)
