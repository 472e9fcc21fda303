"""The image scenario's parts: the CNN graphs, the three request bodies as real servers parse
them, the stand-in's gRPC endpoint and the gRPC load generator on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from grpc import aio
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from bench import image
from bench.common import PREDICT_HEADERS
from bench.loadgen import GRPC_SCHEME, Load, grpc_metadata, run_python
from blackbox import grpc_server
from blackbox.onnx_model import OnnxModel
from blackbox.server import _parse_input, _split
from deploy.local.processes import free_port
from service import oip
from service.api.schemas import V2InferRequest
from service.settings import ModelConfig


def _run(blob: bytes, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def test_small_cnn_is_deterministic_per_seed_and_the_patch_rows_are_log_normalised() -> None:
    assert image.small_cnn(3, log_softmax=True) == image.small_cnn(3, log_softmax=True)
    assert image.small_cnn(3, log_softmax=True) != image.small_cnn(4, log_softmax=True)
    x = np.concatenate([image.image(0), image.image(1), image.image(2)])
    log_bias = _run(image.image_patch(), x)
    assert log_bias.shape == (3, len(image.IMAGE_CLASSES))
    np.testing.assert_allclose(np.log(np.exp(log_bias).sum(axis=1)), 0.0, atol=1e-5)
    assert not np.allclose(log_bias[0], log_bias[1])  # the input reaches the output


def test_the_deployed_cnn_loads_in_the_stand_in_with_its_metadata(tmp_path: Path) -> None:
    path = image.write_image_model(tmp_path)
    model = OnnxModel.load(tmp_path, image.IMAGE_MODEL)
    assert path.name == f"{image.IMAGE_MODEL}.onnx"
    assert model.input_shape == image.IMAGE_SHAPE and model.feature_names is None
    logits = model.logits(image.image())
    assert logits.shape == (1, 2) and np.isfinite(logits).all()
    assert np.log(np.exp(logits).sum()) != pytest.approx(0.0)  # logits, not log-probabilities


def test_json_and_binary_bodies_decode_to_the_same_image_in_both_servers() -> None:
    x = image.image()
    body, headers = image.binary_body(x)
    header = headers[image.HEADER_LENGTH]
    assert headers["Content-Type"] == "application/octet-stream"
    # the stand-in's parser
    document, raw = _split(body, header)
    parsed = json.loads(document)
    assert parsed["parameters"] == {"binary_data_output": True}
    np.testing.assert_array_equal(_parse_input(parsed, image.IMAGE_SHAPE, raw), x)
    np.testing.assert_array_equal(
        _parse_input(json.loads(image.json_body(x)), image.IMAGE_SHAPE), x
    )
    # the gateway's parser
    document, binary = oip.split_body(body, header)
    request = V2InferRequest.model_validate_json(document)
    (decoded,) = oip.decode_inputs(request.inputs, binary, True)
    np.testing.assert_array_equal(decoded, x)
    assert len(body) == int(header) + x.size * 4


def test_grpc_body_carries_the_image_raw_and_names_the_model() -> None:
    x = image.image()
    request = pb.ModelInferRequest.FromString(image.grpc_body(x, image.IMAGE_MODEL_BINARY))
    assert request.model_name == image.IMAGE_MODEL_BINARY
    assert list(request.inputs[0].shape) == [1, *image.IMAGE_SHAPE]
    np.testing.assert_array_equal(grpc_server.input_array(request, image.IMAGE_SHAPE), x)


def test_model_config_is_a_valid_gateway_model_with_binary_upstream_calls_when_asked() -> None:
    for binary in (False, True):
        cfg = ModelConfig.model_validate(image.model_config("http://u:1", "m", binary))
        assert cfg.upstream.binary_data is binary
        assert cfg.upstream.url == f"http://u:1/v2/models/{image.IMAGE_MODEL}/infer"
        assert cfg.input.shape == list(image.IMAGE_SHAPE)


def test_grpc_metadata_keeps_credentials_and_drops_what_grpc_owns() -> None:
    headers = {**PREDICT_HEADERS, image.HEADER_LENGTH: "12"}
    assert grpc_metadata(headers) == [("authorization", PREDICT_HEADERS["Authorization"])]


@contextlib.asynccontextmanager
async def _standin_grpc(tmp_path: Path, delay_ms: float = 0.0):
    image.write_image_model(tmp_path)
    model = OnnxModel.load(tmp_path, image.IMAGE_MODEL)
    port = free_port()
    server = await grpc_server.start({image.IMAGE_MODEL: model}, "127.0.0.1", port, delay_ms)
    try:
        yield model, port
    finally:
        await server.stop(0)


async def test_the_stand_in_answers_model_infer_with_raw_logits(tmp_path: Path) -> None:
    x = image.image()
    async with (
        _standin_grpc(tmp_path) as (model, port),
        aio.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        answer = await stub.ModelInfer(
            pb.ModelInferRequest.FromString(image.grpc_body(x, image.IMAGE_MODEL))
        )
        logits = np.frombuffer(answer.raw_output_contents[0], "<f4").reshape(1, 2)
        np.testing.assert_allclose(logits, model.logits(x), rtol=1e-6)
        assert (await stub.ModelReady(pb.ModelReadyRequest(name="nope"))).ready is False
        with pytest.raises(aio.AioRpcError, match="not found"):
            await stub.ModelInfer(pb.ModelInferRequest(model_name="nope"))
        wrong = pb.ModelInferRequest.FromString(image.grpc_body(x[:, :2], image.IMAGE_MODEL))
        with pytest.raises(aio.AioRpcError, match=r"input shape must be \[N, 3, 64, 64\]"):
            await stub.ModelInfer(wrong)


@pytest.mark.slow  # spawns the generator's process (a second or two)
async def test_grpc_generator_counts_answers_and_refusals(tmp_path: Path) -> None:
    x = image.image()
    async with _standin_grpc(tmp_path, delay_ms=5.0) as (_, port):
        url = f"{GRPC_SCHEME}127.0.0.1:{port}"
        good, missing = image.grpc_body(x, image.IMAGE_MODEL), image.grpc_body(x, "nope")
        # the generator blocks on its process: this loop must keep serving meanwhile
        ok = Load.from_raw(await asyncio.to_thread(run_python, url, good, {}, 2, 0.5))
        bad = Load.from_raw(await asyncio.to_thread(run_python, url, missing, {}, 1, 0.3))
    assert ok.errors == 0 and ok.requests >= 10
    assert ok.p50_ms >= 5.0  # the stand-in's sleep is inside every measured call
    assert bad.requests > 0 and bad.errors == bad.requests


@pytest.mark.slow  # a stand-in, a gateway and 24 generator processes: about a minute
def test_image_phase_measures_every_way_directly_and_through_the_gateway(tmp_path: Path) -> None:
    """Scenario 6 end to end on loopback: every load completes without a failed request
    (``Bench.load`` raises on one), the gateway's answers are debiased by the CNN patch
    (``activate_patch`` waits for that) and the summary has every mode's keys."""
    from bench.measure import Bench
    from bench.report import IMAGE_MODES, image_summary
    from bench.scenarios import image_phase
    from deploy.local.processes import clear_redis_prefix

    prefix = "eraser-test-bench-image"
    bench = Bench(run_python, PREDICT_HEADERS, seconds=0.5, warm_s=0.2, rounds=1)
    clear_redis_prefix(prefix)
    try:
        loads, rounds = image_phase(bench, tmp_path, prefix=prefix)
    finally:
        clear_redis_prefix(prefix)
    ways = [f"image_{t}_{m}_c{c}" for t in ("direct", "gateway") for m in IMAGE_MODES
            for c in (1, 32)]  # fmt: skip
    assert sorted(loads) == sorted(ways) and all(len(rounds[w]) == 1 for w in ways)
    assert all(loads[w].requests > 0 and loads[w].errors == 0 for w in ways)
    summary = image_summary(loads)
    for mode in IMAGE_MODES:
        assert summary[f"image_{mode}_p50_ms"] > 0 and summary[f"image_{mode}_rps_c32"] > 0
