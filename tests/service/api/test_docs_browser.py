"""``/docs`` renders in a headless DOM with the internet cut off.

jsdom (tests/service/api/browser, installed by ``make browser-deps``) loads the page from a real
gateway on loopback, runs its scripts and refuses every request outside the gateway's origin,
as an air-gapped machine would. The control: FastAPI's stock docs page, whose assets come from a
public CDN, renders blank under the same check (the bug this guards against)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from fastapi import FastAPI

from service.api.app import create_app
from service.metrics import GatewayMetrics
from service.settings import GatewaySettings
from tests.servers import running_server

BROWSER = Path(__file__).parent / "browser"
SCRIPT = BROWSER / "docs_dom.mjs"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("node") is None, reason="no node: the headless DOM needs it"),
    pytest.mark.skipif(
        not (BROWSER / "node_modules" / "jsdom").is_dir(),
        reason="jsdom not installed: run `make browser-deps` (npm)",
    ),
]


def open_page(url: str, timeout_ms: int) -> dict:
    out = subprocess.run(
        ["node", str(SCRIPT), url, str(timeout_ms)],
        capture_output=True,
        text=True,
        timeout=timeout_ms / 1000 + 60,
        check=True,
    )
    return json.loads(out.stdout)


def test_swagger_ui_renders_every_operation_without_internet(settings: GatewaySettings) -> None:
    app = create_app(settings, GatewayMetrics())
    with running_server(app) as url:
        page = open_page(f"{url}/docs", 60_000)
        spec = json.loads(subprocess.run(
            ["curl", "-s", f"{url}/openapi.json"], capture_output=True, text=True, check=True
        ).stdout)  # fmt: skip
    assert page["refused"] == [] and page["errors"] == [], page
    assert page["title"] and page["title"].startswith(spec["info"]["title"]), page
    operations = sum(len(methods) for methods in spec["paths"].values())
    assert page["operations"] == operations, (page["operations"], operations)


def test_the_check_sees_a_cdn_docs_page_render_blank() -> None:
    app = FastAPI(title="stock docs")
    app.get("/ping")(lambda: "pong")
    with running_server(app) as url:
        page = open_page(f"{url}/docs", 3_000)
    assert page["title"] is None and page["operations"] == 0
    assert page["refused"] and all(u.startswith("https://") for u in page["refused"])
