"""A bare pass-through proxy: the throughput baseline for ``throughput_vs_passthrough``.

It runs the gateway's server stack (FastAPI on uvicorn + uvloop + httptools, one pooled aiohttp
``ClientSession`` sized like the gateway's) and does nothing else: read the body, POST it to the
upstream, return the upstream's bytes. Whatever the gateway costs beyond this (auth, pydantic,
numpy, ONNX, the Eraser math, rendering) is what the ratio measures.

``python -m bench.passthrough --port 9100 --upstream http://127.0.0.1:9001/v2/models/compas/infer``
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import uvicorn
from fastapi import FastAPI, Request, Response

MAX_CONNECTIONS = 256  # the gateway's UpstreamConfig.max_connections default


def create_app(upstream_url: str) -> FastAPI:
    """Every POST to ``/v2/models/{model}/infer`` goes to ``upstream_url`` unchanged."""
    session: aiohttp.ClientSession | None = None

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        nonlocal session
        connector = aiohttp.TCPConnector(limit=MAX_CONNECTIONS)
        headers = {"Content-Type": "application/json"}
        async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
            yield

    app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/health")
    async def health() -> dict:
        return {"ok": True}

    @app.post("/v2/models/{model}/infer")
    async def forward(model: str, request: Request) -> Response:
        assert session is not None, "lifespan opens the session before requests arrive"
        body = await request.body()
        async with session.post(upstream_url, data=body) as upstream:
            payload = await upstream.read()
            return Response(payload, upstream.status, media_type="application/json")

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="the upstream's full infer URL")
    args = parser.parse_args()
    uvicorn.run(
        create_app(args.upstream),
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
