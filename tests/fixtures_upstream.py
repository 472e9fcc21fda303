"""A real, misbehaving black box on 127.0.0.1 for the upstream client's tests.

The server speaks OIP v2, KServe v1 and the generic shape below; a test switches its behaviour
at runtime (``server.behave("status503_then_ok", fail_first=2)``) and reads ``server.calls``.
Everything goes over real sockets, so the client's pooling, timeouts and error mapping are
exercised as in production, not through mocks.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from aiohttp import web

from service.settings import ModelConfig, OutputKind, WireProtocol

Mode = Literal[
    "ok",  # valid answer: reference_logits(x, classes)
    "slow",  # sleeps delay_s, longer than the client's read timeout
    "status500",  # HTTP 500 with a text body
    "status503_then_ok",  # HTTP 503 for the first fail_first calls, then ok
    "status404",  # HTTP 404 with a KServe-style {"error": ...} body
    "garbage",  # HTTP 200 with an HTML page
    "wrong_classes",  # classes + 1 columns
    "nan",  # a NaN literal in the scores (as Python's json.dumps writes it)
    "disconnect",  # closes the connection without answering
]

GENERIC_TEMPLATE: dict[str, Any] = {"meta": {"source": "eraser"}, "payload": {"rows": "$instances"}}
GENERIC_RESPONSE_PATH = "result.scores"
V2_PATH = "/v2/models/m/infer"
V1_PATH = "/v1/models/m:predict"
GENERIC_PATH = "/score"


def reference_logits(x: np.ndarray, classes: int) -> np.ndarray:
    """What the fake black box answers: row sum times class index (rows differ after softmax)."""
    row_sums = np.asarray(x, dtype=np.float32).reshape(len(x), -1).sum(axis=1, dtype=np.float64)
    return row_sums[:, None] * np.arange(classes, dtype=np.float64)[None, :]


@dataclass
class FakeUpstream:
    """Behaviour knobs plus what the server saw; mutate through ``behave``."""

    port: int = 0
    mode: Mode = "ok"
    classes: int = 2
    fail_first: int = 1
    delay_s: float = 5.0
    flat: bool = False  # answer [N] instead of [N, classes] (a sigmoid model's one logit)
    answer_names: list[str] | None = None  # OIP v2 tensor names to answer, ignoring the request
    latency: Callable[[int], float] | None = None  # extra sleep by call index (0-based)
    calls: int = 0
    batch_sizes: list[int] = field(default_factory=list)
    bodies: list[Any] = field(default_factory=list)
    _failed: int = 0

    def behave(self, mode: Mode, **knobs: Any) -> None:
        """Switch behaviour; knobs are any of the fields above (classes, fail_first, ...)."""
        self.mode = mode
        self._failed = 0
        for name, value in knobs.items():
            if not hasattr(self, name) or name.startswith("_"):
                raise AttributeError(f"FakeUpstream has no knob {name!r}")
            setattr(self, name, value)

    def url(self, protocol: WireProtocol = WireProtocol.OIP_V2) -> str:
        paths = {WireProtocol.OIP_V2: V2_PATH, WireProtocol.KSERVE_V1: V1_PATH}
        path = paths.get(protocol, GENERIC_PATH)
        return f"http://127.0.0.1:{self.port}{path}"

    # ---- request handling ------------------------------------------------------------------

    async def handle(self, request: web.Request, protocol: WireProtocol) -> web.StreamResponse:
        index = self.calls
        self.calls += 1
        doc = json.loads(await request.read())
        self.bodies.append(doc)
        x = _instances(doc, protocol)
        self.batch_sizes.append(len(x))
        if self.latency is not None:
            await asyncio.sleep(self.latency(index))
        fault = await self._fault(request)
        if fault is not None:
            return fault
        scores = self._scores(x)
        return web.Response(
            text=self._render(protocol, doc, scores), content_type="application/json"
        )

    async def _fault(self, request: web.Request) -> web.StreamResponse | None:
        if self.mode == "slow":
            await asyncio.sleep(self.delay_s)
        elif self.mode == "status500":
            return web.Response(status=500, text="model crashed: CUDA error: out of memory")
        elif self.mode == "status503_then_ok" and self._failed < self.fail_first:
            self._failed += 1
            return web.Response(status=503, text="model is loading")
        elif self.mode == "status404":
            return web.json_response({"error": "Model m not found"}, status=404)
        elif self.mode == "garbage":
            return web.Response(
                text="<html><body>Bad Gateway</body></html>", content_type="text/html"
            )
        elif self.mode == "disconnect":
            assert request.transport is not None
            request.transport.close()
            raise asyncio.CancelledError  # nothing left to answer on; end the handler quietly
        return None

    def _scores(self, x: np.ndarray) -> np.ndarray:
        classes = self.classes + 1 if self.mode == "wrong_classes" else self.classes
        scores = reference_logits(x, classes)
        if self.mode == "nan":
            scores[0, -1] = float("nan")
        return scores[:, -1] if self.flat else scores

    def _render(self, protocol: WireProtocol, doc: dict[str, Any], scores: np.ndarray) -> str:
        if protocol is WireProtocol.KSERVE_V1:
            return json.dumps({"predictions": scores.tolist()})
        if protocol is WireProtocol.GENERIC:
            return json.dumps({"result": {"scores": scores.tolist()}, "model": "m"})
        requested = [o["name"] for o in doc.get("outputs", [])] or ["output-0"]
        names = self.answer_names or requested
        outputs = [
            {
                "name": n,
                "shape": list(scores.shape),
                "datatype": "FP64",
                "data": scores.ravel().tolist(),
            }
            for n in names
        ]
        return json.dumps({"model_name": "m", "outputs": outputs})


def _instances(doc: dict[str, Any], protocol: WireProtocol) -> np.ndarray:
    """The batch as float32, exactly as the client sent it (shortest float32 repr parses back)."""
    if protocol is WireProtocol.KSERVE_V1:
        return np.asarray(doc["instances"], dtype=np.float32)
    if protocol is WireProtocol.GENERIC:
        return np.asarray(doc["payload"]["rows"], dtype=np.float32)
    tensor = doc["inputs"][0]
    return np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])


@asynccontextmanager
async def fake_upstream(**knobs: Any) -> AsyncIterator[FakeUpstream]:
    """Start the server on a free port; handlers are cancelled when a client hangs up, so a
    "slow" request does not hold up shutdown."""
    server = FakeUpstream()
    server.behave(knobs.pop("mode", "ok"), **knobs)
    app = web.Application()
    for path, protocol in (
        (V2_PATH, WireProtocol.OIP_V2),
        (V1_PATH, WireProtocol.KSERVE_V1),
        (GENERIC_PATH, WireProtocol.GENERIC),
    ):
        app.router.add_post(path, _route(server, protocol))
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server.port = runner.addresses[0][1]
    try:
        yield server
    finally:
        await runner.cleanup()


def _route(server: FakeUpstream, protocol: WireProtocol) -> Callable[[web.Request], Any]:
    async def handler(request: web.Request) -> web.StreamResponse:
        return await server.handle(request, protocol)

    return handler


def refused_port() -> int:
    """A port on 127.0.0.1 with nothing listening: connecting to it is refused at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_model(
    url: str,
    *,
    protocol: WireProtocol = WireProtocol.OIP_V2,
    classes: int = 2,
    kind: OutputKind = OutputKind.LOGITS,
    input_shape: tuple[int, ...] = (3,),
    **upstream: Any,
) -> ModelConfig:
    """A ModelConfig for the fake server, with test-friendly fast retries and breaker."""
    defaults: dict[str, Any] = {"retry_backoff_s": 0.01, "read_timeout_s": 2.0}
    if protocol is WireProtocol.GENERIC:
        defaults |= {"request_template": GENERIC_TEMPLATE, "response_path": GENERIC_RESPONSE_PATH}
    return ModelConfig.model_validate(
        {
            "name": "m",
            "upstream": {
                "url": url,
                "protocol": protocol,
                "output_kind": kind,
                **defaults,
                **upstream,
            },
            "classes": [f"c{i}" for i in range(classes)],
            "input": {"shape": list(input_shape)},
        }
    )
