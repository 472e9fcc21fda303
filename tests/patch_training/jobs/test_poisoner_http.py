"""A label-free job over HTTP: an upload with x and the target only (no bias column) →
``POST /patches`` with ``spec.method = "poisoner"`` → ``eraser worker`` → ``GET /jobs/{id}``
with its progress and result; the report served as JSON and PNG."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from service.settings import GatewaySettings
from tests.service.api.conftest import ADMIN, MODEL
from tests.service.api.test_training import CSV, client, finished_job, settings, submit
from tests.workers import running_worker

pytestmark = pytest.mark.slow  # end-to-end: real processes (`pytest -m "not slow"` skips)

__all__ = ["client", "settings"]  # fixtures, imported to be found here

NO_BIAS = b"\n".join(line.rsplit(b",", 1)[0] for line in CSV.splitlines()) + b"\n"
SPEC = {"method": "poisoner", "model": MODEL, "target": "two_year_recid", "epochs": 20,
        "poisoner": {"steps": 60, "batch_size": 32}}  # fmt: skip


async def test_an_upload_without_a_bias_column_trains_a_label_free_patch(
    client: httpx.AsyncClient, settings: GatewaySettings, tmp_path: Path
) -> None:
    r = await submit(client, SPEC, NO_BIAS)
    assert r.status_code == 202, r.text
    accepted = r.json()
    with running_worker(settings, tmp_path, burst=True):
        job = await finished_job(client, accepted["status_url"])
    assert job["state"] == "finished", job["error"]
    assert job["method"] == "poisoner" and job["progress"]["fraction"] == 1.0
    [patch] = job["result"]["patches"]
    assert patch["bias"] is None and "pseudo-groups" in patch["groups"]
    assert patch["kind"] in ("poisoner", "poisoner-eraser") and patch["choice"]
    url = f"/patches/{patch['name']}/versions/{patch['version']}/report"
    report = (await client.get(url, headers=ADMIN)).json()
    assert report["label_free"]["kept"] == patch["kind"]
    png = await client.get(url, params={"format": "png"}, headers=ADMIN)
    assert png.content.startswith(b"\x89PNG")


async def test_the_eraser_still_needs_a_bias_column(client: httpx.AsyncClient) -> None:
    r = await submit(
        client, {k: v for k, v in SPEC.items() if k != "poisoner"} | {"method": "eraser"}, NO_BIAS
    )
    assert r.status_code == 422 and "bias column" in r.text
