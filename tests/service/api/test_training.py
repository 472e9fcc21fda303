"""Training over HTTP: upload → queue → ``eraser worker`` process → signed version → served.

The gateway runs in process (ASGI), the worker as its own process on the same Redis, the black
box as a real HTTP server — the issue's end-to-end path.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest
import redis.asyncio as aioredis
from fastapi import FastAPI

from blackbox.data import (
    BIAS,
    TARGET,
    compas_calibration_csv,
    compas_split,
    load_compas,
    with_race_feature,
)
from blackbox.model import CLASSES
from deploy.local.processes import standin_model_config
from patch_training.metrics import group_report
from service.api.app import create_app
from service.metrics import GatewayMetrics
from service.settings import GatewaySettings, ModelConfig
from tests.service.api.conftest import ADMIN, MODEL, PREDICT, make_settings
from tests.workers import remove_queue, running_worker, with_own_queue

pytestmark = pytest.mark.slow  # end-to-end: real processes (`pytest -m "not slow"` skips)

DATA = with_race_feature(load_compas())  # the stand-in used here takes race as an input
SPLIT = compas_split(DATA)
CSV = compas_calibration_csv(DATA, SPLIT.calib)
SPEC = {"model": MODEL, "target": TARGET, "bias": [BIAS], "name": "race", "epochs": 60}


@pytest.fixture
def settings(
    key_prefix: str, race_input_blackbox_url: str, redis_client: object
) -> Iterator[GatewaySettings]:
    settings = with_own_queue(make_settings(key_prefix, race_input_blackbox_url))
    model = standin_model_config(race_input_blackbox_url, MODEL, DATA.feature_names)
    settings.models[0] = ModelConfig.model_validate(model)
    yield settings
    remove_queue(settings)


@pytest.fixture
async def client(settings: GatewaySettings) -> AsyncIterator[httpx.AsyncClient]:
    app: FastAPI = create_app(settings, GatewayMetrics())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as c:
            yield c


async def submit(client: httpx.AsyncClient, spec: dict, data: bytes = CSV, **kw: object):
    return await client.post(
        "/patches",
        headers=kw.pop("headers", ADMIN),
        data={"spec": orjson.dumps(spec).decode()},
        files={"calibration": ("calib.csv", data, "text/csv")},
    )


async def finished_job(client: httpx.AsyncClient, url: str, timeout_s: float = 90) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = (await client.get(url, headers=ADMIN)).json()
        if job["state"] in ("finished", "failed"):
            return job
        await asyncio.sleep(0.2)
    raise TimeoutError(f"job at {url} did not finish")


async def test_uploaded_set_trains_a_patch_that_serves_with_lower_bias(
    client: httpx.AsyncClient, settings: GatewaySettings, tmp_path: Path
) -> None:
    r = await submit(client, SPEC | {"activate": True})
    assert r.status_code == 202, r.text
    accepted = r.json()
    assert r.headers["location"] == accepted["status_url"] and accepted["rows"] == len(SPLIT.calib)
    with running_worker(settings, tmp_path, burst=True):
        job = await finished_job(client, accepted["status_url"])
    assert job["state"] == "finished", job["error"]
    [patch] = job["result"]["patches"]
    assert patch["status"] == "validated" and patch["activated"]
    assert job["progress"]["fraction"] == 1.0
    raw, fair = await _served_reports(client, job["result"]["stack_revision"])
    assert fair.eo_bias < raw.eo_bias - 0.10  # most of it (demo, full test split: 24.4 → 5.9)
    assert fair.worst_group_acc > raw.worst_group_acc
    version = await client.get(f"/patches/race/versions/{patch['version']}", headers=ADMIN)
    assert version.json()["manifest"]["calibration_set_id"] == accepted["calibration_set_id"]


async def _served_reports(client: httpx.AsyncClient, revision: int) -> tuple:
    """Raw and fair group metrics of /predict on the test split, once the revision serves."""
    test = SPLIT.test[:1000]  # one request (max_batch 1024)
    x = DATA.X[test]
    for _ in range(100):
        body = {"model": MODEL, "instances": x.tolist(), "return_raw": True}
        answer = (await client.post("/predict", headers=PREDICT, json=body)).json()
        if answer["revision"] == revision:
            break
        await asyncio.sleep(0.1)
    assert answer["revision"] == revision and answer["debiased"]
    preds = answer["predictions"]
    fair = np.array([CLASSES.index(p["label"]) for p in preds])
    raw = np.array([np.argmax([p["raw_probabilities"][c] for c in CLASSES]) for p in preds])
    y, race = DATA.y[test], DATA.race[test]
    return group_report(y, raw, race), group_report(y, fair, race)


async def test_report_is_served_as_json_and_png(
    client: httpx.AsyncClient, settings: GatewaySettings, tmp_path: Path
) -> None:
    accepted = (await submit(client, SPEC)).json()
    with running_worker(settings, tmp_path, burst=True):
        job = await finished_job(client, accepted["status_url"])
    version = job["result"]["patches"][0]["version"]
    url = f"/patches/race/versions/{version}/report"
    as_json = await client.get(url, headers=ADMIN)
    assert as_json.headers["content-type"] == "application/json"
    assert as_json.json()["gate"]["reason"] == job["result"]["patches"][0]["reason"]
    png = await client.get(url, headers=ADMIN | {"accept": "image/png"})
    assert png.headers["content-type"] == "image/png" and png.content.startswith(b"\x89PNG")
    assert (await client.get(url + "?format=png", headers=ADMIN)).content == png.content


async def test_bad_input_fails_once_with_its_reason_and_is_not_retried(
    client: httpx.AsyncClient, settings: GatewaySettings, tmp_path: Path
) -> None:
    # Valid at upload, unusable at training: a held-out fraction that leaves nothing to fit.
    accepted = (await submit(client, SPEC | {"folds": 1, "holdout_fraction": 0.9999})).json()
    with running_worker(settings, tmp_path, burst=True):
        job = await finished_job(client, accepted["status_url"])
    assert job["state"] == "failed"
    assert "ValueError" in job["error"] and "both sides" in job["error"]
    assert job["retries_left"] == 0


WITHOUT_RACE = b"\n".join(line.rsplit(b",", 1)[0] for line in CSV.splitlines()) + b"\n"
assert not CSV.splitlines()[0].endswith(b"african_american")  # race is the last column
BAD_UPLOADS = [
    ("missing column", SPEC, WITHOUT_RACE, 422, "race"),
    ("one target class", SPEC, b"\n".join(CSV.splitlines()[:2]) + b"\n", 422, "class"),
    ("not a table", SPEC, b"\x00\x01garbage", 422, "calibration"),
    ("unknown model", SPEC | {"model": "nope"}, CSV, 404, "nope"),
    ("unknown spec field", SPEC | {"epoch": 3}, CSV, 422, "epoch"),
    ("empty file", SPEC, b"", 400, "empty"),
]


@pytest.mark.parametrize(("why", "spec", "data", "status", "named"), BAD_UPLOADS)
async def test_bad_upload_is_refused_and_leaves_nothing_stored_or_queued(
    client: httpx.AsyncClient,
    settings: GatewaySettings,
    redis_client: aioredis.Redis,
    key_prefix: str,
    why: str,
    spec: dict,
    data: bytes,
    status: int,
    named: str,
) -> None:
    r = await submit(client, spec, data)
    assert r.status_code == status, (why, r.text)
    assert named in r.json()["error"]["message"], why
    assert [k async for k in redis_client.scan_iter(match=f"{key_prefix}:calibration*")] == []
    assert await redis_client.llen(f"rq:queue:{settings.training.queue}") == 0


async def test_spec_that_is_not_json_is_a_400(client: httpx.AsyncClient) -> None:
    r = await client.post("/patches", headers=ADMIN, data={"spec": "{"}, files={"calibration": CSV})
    assert r.status_code == 400 and "not JSON" in r.json()["error"]["message"]


async def test_training_routes_need_the_operator_key(client: httpx.AsyncClient) -> None:
    assert (await submit(client, SPEC, headers=PREDICT)).status_code == 403
    assert (await client.get("/jobs/x", headers=PREDICT)).status_code == 403


async def test_unknown_job_is_404(client: httpx.AsyncClient) -> None:
    r = await client.get("/jobs/distill-unknown", headers=ADMIN)
    assert r.status_code == 404 and r.json()["error"]["code"] == "job_not_found"
