"""FMD training jobs with uploaded counterfactual pairs over HTTP: ``POST /patches`` with
``spec.method = "fmd"``, a calibration file and a ``pairs`` NPZ. Bad pairs are a 422 naming the
fault that leaves nothing stored or queued; (slow) a real ``eraser worker`` trains on them and
registers a patch whose report (JSON and PNG) shows the counterfactual bias it measured on the
uploaded x̄."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest
import redis.asyncio as aioredis
from PIL import Image

from blackbox.data import BIAS, RACE_FEATURE, TARGET, compas_calibration_csv
from service.api.app import create_app
from service.metrics import GatewayMetrics
from service.settings import GatewaySettings
from tests.service.api.conftest import ADMIN, MODEL, asgi_client
from tests.service.api.test_audits import DATA, NO_UPSTREAM, gateway_settings, npz, queued
from tests.service.api.test_training import finished_job
from tests.workers import remove_queue, running_worker

ROWS = np.arange(300)
CSV = compas_calibration_csv(DATA, ROWS)  # features (race among them), target, race
RACE_COLUMN = DATA.feature_names.index(RACE_FEATURE)


def parsed_x(rows: np.ndarray = ROWS) -> np.ndarray:
    """The calibration rows exactly as the gateway reads them back from the CSV."""
    return np.array([[float(f"{v:g}") for v in DATA.X[i]] for i in rows], dtype=np.float32)


def flipped(x: np.ndarray) -> np.ndarray:
    """Each row with the race input flipped: the counterfactual of the file's ``race``."""
    x_cf = x.copy()
    x_cf[:, RACE_COLUMN] = 1 - x_cf[:, RACE_COLUMN]
    return x_cf


SPEC = {"method": "fmd", "model": MODEL, "target": TARGET, "bias": [BIAS]}
GOOD = flipped(parsed_x())


@pytest.fixture
def settings(key_prefix: str, redis_client: object) -> Iterator[GatewaySettings]:
    settings = gateway_settings(key_prefix, NO_UPSTREAM)
    yield settings
    remove_queue(settings)


@pytest.fixture
async def client(settings: GatewaySettings) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(create_app(settings, GatewayMetrics())) as c:
        yield c


async def submit(
    client: httpx.AsyncClient, spec: dict, data: bytes = CSV, pairs: bytes | None = None
) -> httpx.Response:
    files = {"calibration": ("calib.csv", data, "text/csv")}
    if pairs is not None:
        files["pairs"] = ("pairs.npz", pairs, "application/octet-stream")
    return await client.post(
        "/patches", headers=ADMIN, data={"spec": orjson.dumps(spec).decode()}, files=files
    )


def nan_row() -> np.ndarray:
    x_cf = GOOD.copy()
    x_cf[4, 0] = np.nan
    return x_cf


BAD = {  # case → (spec, pairs, what the 422 must name)
    "not-an-input-no-pairs": (SPEC, None, "no counterfactual pairs were uploaded"),
    "shape": (SPEC, npz(x_cf=GOOD[:, :5]), "'x_cf' has shape [300, 5]"),
    "row-count": (SPEC, npz(x_cf=GOOD[:7]), "has 7 rows"),
    "dtype": (SPEC, npz(x_cf=GOOD.astype(str)), "must be numeric"),
    "non-finite": (SPEC, npz(x_cf=nan_row()), "row 5 holds a NaN"),
    "unused-array": (SPEC, npz(x_cf=GOOD, colour=GOOD), "['colour'] that no attribute uses"),
    "misaligned-x": (SPEC, npz(x_cf=GOOD, x=GOOD), "not aligned"),
    "wrong-attribute": (SPEC, npz(x_cf_sex=GOOD), "no counterfactuals for attribute 'race'"),
    "no-counterfactuals": (SPEC, npz(x_cf=np.zeros((300, 0, 8))), "(M = 0)"),
    "not-an-npz": (SPEC, b"this is not an NPZ", "pairs file"),
    "input-attribute": (SPEC | {"bias": [RACE_FEATURE]}, npz(x_cf=GOOD), "every bias column"),
    "not-fmd": (SPEC | {"method": "eraser"}, npz(x_cf=GOOD), "only method 'fmd'"),
    "set-by-gateway": (SPEC | {"pairs_id": "0" * 64}, npz(x_cf=GOOD), "spec.pairs_id"),
}


async def test_bad_pairs_are_a_422_that_names_the_fault_and_store_nothing(
    client: httpx.AsyncClient,
    settings: GatewaySettings,
    redis_client: aioredis.Redis,
    key_prefix: str,
) -> None:
    """One gateway (one upload-checking process) for every case: each is refused alone."""
    for case, (spec, pairs, named) in BAD.items():
        r = await submit(client, spec, pairs=pairs)
        assert r.status_code == 422, (case, r.text)
        assert named in r.json()["error"]["message"], (case, r.json())
    assert [k async for k in redis_client.scan_iter(match=f"{key_prefix}:*")] == []
    assert queued(settings) == 0


async def test_an_empty_pairs_part_is_a_400(client: httpx.AsyncClient) -> None:
    r = await submit(client, SPEC, pairs=b"")
    assert r.status_code == 400 and "pairs file is empty" in r.text


async def test_pairs_over_the_upload_limit_are_refused(
    key_prefix: str, redis_client: aioredis.Redis
) -> None:
    settings = gateway_settings(key_prefix, NO_UPSTREAM)
    settings.training.max_calibration_mb = 0.05  # the CSV fits (about 20 kB), the pairs do not
    big = npz(x_cf=np.repeat(GOOD[:, None], 8, axis=1))  # 300 × 8 × 8 float32: 77 kB
    app = create_app(settings, GatewayMetrics())
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as c:
                r = await submit(c, SPEC, pairs=big)
        assert r.status_code == 413 and "pairs" in r.text, r.text
        assert [k async for k in redis_client.scan_iter(match=f"{key_prefix}:*")] == []
    finally:
        remove_queue(settings)


async def test_accepted_pairs_are_stored_by_hash_and_named_by_the_queued_spec(
    client: httpx.AsyncClient, redis_client: aioredis.Redis, key_prefix: str
) -> None:
    from service.registry.signing import sha256_hex

    pairs = npz(x_cf=GOOD, x=parsed_x())
    r = await submit(client, SPEC, pairs=pairs)
    assert r.status_code == 202, r.text
    accepted = r.json()
    assert accepted["pairs_id"] == sha256_hex(pairs) and accepted["rows"] == len(ROWS)
    assert await redis_client.get(f"{key_prefix}:calibration:{accepted['pairs_id']}") == pairs
    job = (await client.get(accepted["status_url"], headers=ADMIN)).json()
    assert job["state"] == "queued"


# ------------------------------------------------------------------------------ end to end


@pytest.fixture
def live_settings(
    key_prefix: str, race_input_blackbox_url: str, redis_client: object
) -> Iterator[GatewaySettings]:
    settings = gateway_settings(key_prefix, race_input_blackbox_url)
    yield settings
    remove_queue(settings)


@pytest.mark.slow  # a real worker process trains: about 20 s on one core
async def test_a_worker_trains_an_fmd_patch_on_the_uploaded_pairs(
    live_settings: GatewaySettings, tmp_path: Path
) -> None:
    """``race`` is a column of the file, not an input: its counterfactuals come only from the
    pairs (here the rows with the race input flipped, so the stand-in's reliance on race is
    what they measure)."""
    rows = np.arange(600)
    spec = SPEC | {"folds": 2, "fmd": {"hidden": [16], "epochs": 40},
                   "gate": {"bootstrap_draws": 300}}  # fmt: skip
    pairs = npz(x_cf=flipped(parsed_x(rows)), x=parsed_x(rows))
    app = create_app(live_settings, GatewayMetrics())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            r = await submit(client, spec, compas_calibration_csv(DATA, rows), pairs)
            assert r.status_code == 202, r.text
            with running_worker(live_settings, tmp_path, burst=True):
                job = await finished_job(client, r.json()["status_url"], timeout_s=180)
            assert job["state"] == "finished", job["error"]
            [patch] = job["result"]["patches"]
            url = f"/patches/{patch['name']}/versions/{patch['version']}"
            version = (await client.get(url, headers=ADMIN)).json()
            report = (await client.get(url + "/report", headers=ADMIN)).json()
            png = await client.get(url + "/report", params={"format": "png"}, headers=ADMIN)
    assert patch["kind"] == "fmd" and patch["bias"] == BIAS
    assert version["manifest"]["training_config"]["job"]["pairs_id"] == r.json()["pairs_id"]
    cf = patch["counterfactual_bias"]
    assert cf["rows"] == job["result"]["verdict_rows"]
    # the stand-in takes race as an input: flipping it moves its answers
    assert cf["raw"]["estimate"] > 0.5 and cf["raw"]["low"] <= cf["raw"]["estimate"]
    section = report["fmd"]
    assert section["attribute"] == BIAS and section["counterfactuals"] == "pairs"
    assert section["values"] is None and section["counterfactuals_per_row"] == 1
    assert set(section["counterfactual_bias"]["groups"]) == {"African-American", "Caucasian"}
    assert sum(c["chosen"] for c in section["k"]["curve"]) == 1
    assert set(report["verdict"]["group_rows"]) <= {
        f"y={c},b={g}" for c in "01" for g in ("African-American", "Caucasian")
    }
    # the PNG has the FMD row of panels under the shared two
    assert png.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(png.content))
    image.verify()
    assert image.format == "PNG" and image.size == (990, 756)  # 11 × 8.4 in at 90 dpi
