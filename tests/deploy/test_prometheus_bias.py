"""A real Prometheus scrapes a running gateway that serves monitored traffic and feedback:
the bias it computes from the gateway's counters equals fairlearn's on the same decisions, and
every dashboard query and every rule returns data without error.

Traffic is synthetic on purpose: groups and true labels are drawn from the decisions the
gateway served, so that the fair stage is biased enough to fire the bias alerts, and a
tampered stack record makes a hot-load fail, and a model whose upstream refuses connections
produces upstream errors; every panel then has something to show.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest
import redis.asyncio as aioredis
from fairlearn.metrics import (
    MetricFrame,
    demographic_parity_difference,
    demographic_parity_ratio,
    equalized_odds_difference,
    selection_rate,
)

from blackbox.data import load_compas
from blackbox.model import MlpWeights
from blackbox.server import create_app as create_blackbox
from patch_training.metrics import group_report
from service.api.app import create_app
from service.registry.keys import RegistryKeys
from service.settings import GatewaySettings
from tests.deploy.queries import dashboard_queries, rule_queries
from tests.fixtures_upstream import refused_port
from tests.prometheus import prometheus_binary, running_prometheus
from tests.servers import running_server
from tests.service.api.conftest import ADMIN, MODEL, PREDICT, random_patch, register_patch
from tests.service.monitoring.conftest import FEEDBACK, RACES, monitored_settings

pytestmark = pytest.mark.slow  # end-to-end: real processes (`pytest -m "not slow"` skips)

N_ROWS, BATCH = 240, 24
POSITIVE = "no_recid"  # the compose and test settings' positive (favourable) class
TOL = 1e-9
FAST = {"loop": "uvloop", "http": "httptools"}
ALPHA = 0.02  # this random patch flips ~18 % of these rows at 0.02 (all of one class above)


@pytest.fixture(scope="module")
def prometheus() -> str:
    try:
        return prometheus_binary()
    except RuntimeError as exc:
        pytest.skip(f"no Prometheus server here and none could be installed: {exc}")


@pytest.fixture(scope="module")
def upstream_url(blackbox_model: MlpWeights) -> Iterator[str]:
    """The stand-in black box, served as ``eraser-gateway serve`` serves (uvloop, httptools):
    uvicorn's default h11 protocol answers in two writes and meets delayed ACKs, ~45 ms per
    call here."""
    with running_server(create_blackbox(blackbox_model, name=MODEL), **FAST) as url:
        yield url


@pytest.fixture
def settings(key_prefix: str, upstream_url: str, redis_client: aioredis.Redis) -> GatewaySettings:
    broken = {
        "name": "broken",
        "classes": ["a", "b"],
        "input": {"shape": [7]},
        "upstream": {
            "url": f"http://127.0.0.1:{refused_port()}/v2/models/broken/infer",
            "retries": 0,
            "breaker_threshold": 1000,
        },
    }
    return monitored_settings(key_prefix, upstream_url, models=[broken])


class Prom:
    """The Prometheus HTTP API, instant queries only."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def query(self, expr: str) -> list[dict]:
        r = await self.client.get("/api/v1/query", params={"query": expr})
        body = r.json()
        assert r.status_code == 200 and body["status"] == "success", (expr, body)
        return body["data"]["result"]

    async def value(self, expr: str) -> float | None:
        result = await self.query(expr)
        assert len(result) <= 1, (expr, result)
        return float(result[0]["value"][1]) if result else None

    async def until(self, expr: str, expected: float, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while (value := await self.value(expr)) != expected:
            assert time.monotonic() < deadline, f"{expr} = {value}, waited for {expected}"
            await asyncio.sleep(0.2)

    async def rules_evaluated_after(self, moment: float, timeout_s: float = 20.0) -> list[dict]:
        deadline = time.monotonic() + timeout_s
        while True:
            groups = (await self.client.get("/api/v1/rules")).json()["data"]["groups"]
            if all(_epoch(g["lastEvaluation"]) > moment for g in groups):
                return groups
            assert time.monotonic() < deadline, "rules were not evaluated again"
            await asyncio.sleep(0.2)


def _epoch(rfc3339: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


def synthetic_groups(fair: list[str], seed: int = 0) -> tuple[list[str], list[str], list[str]]:
    """Race drawn against the served decision (so fair-stage parity is out of band), sex at
    random, and true labels that are right far more often for the privileged group."""
    rng = np.random.default_rng(seed)
    favoured, disfavoured = [0.1, 0.6, 0.15, 0.15], [0.6, 0.1, 0.15, 0.15]
    race = [str(rng.choice(RACES, p=favoured if f == POSITIVE else disfavoured)) for f in fair]
    sex = [str(rng.choice(["Female", "Male"])) for _ in fair]
    other = {"no_recid": "recid", "recid": "no_recid"}
    truth = [
        f if rng.random() < (0.92 if r == "Caucasian" else 0.6) else other[f]
        for f, r in zip(fair, race, strict=True)
    ]
    return race, sex, truth


def argmax_labels(body: dict, field: str) -> list[str]:
    return [max(p[field], key=p[field].get) for p in body["predictions"]]


async def serve_and_label(
    client: httpx.AsyncClient, rows: np.ndarray
) -> tuple[list[str], list[str], list[str], list[str], list[str]]:
    """Unmonitored answers first (the stack is fixed, so monitored answers repeat them), then the
    same rows with monitoring attributes, then one feedback call per instance."""
    fair = []
    for i in range(0, len(rows), BATCH):
        body = {"model": MODEL, "instances": rows[i : i + BATCH].tolist()}
        r = await client.post("/predict", headers=PREDICT, json=body)
        fair += argmax_labels(r.json(), "probabilities")
    race, sex, truth = synthetic_groups(fair)
    raw_seen, fair_seen = [], []
    for i in range(0, len(rows), BATCH):
        monitor = [
            {"race": r, "sex": s}
            for r, s in zip(race[i : i + BATCH], sex[i : i + BATCH], strict=True)
        ]
        body = {"model": MODEL, "instances": rows[i : i + BATCH].tolist(), "monitor": monitor}
        r = await client.post("/predict", headers=PREDICT, json=body | {"return_raw": True})
        answer = r.json()
        raw_seen += argmax_labels(answer, "raw_probabilities")
        fair_seen += argmax_labels(answer, "probabilities")
        for j in range(len(monitor)):
            fb = {"request_id": answer["request_id"], "index": j, "label": truth[i + j]}
            assert (await client.post("/feedback", headers=FEEDBACK, json=fb)).status_code == 200
    assert fair_seen == fair
    return raw_seen, fair_seen, race, sex, truth


async def tamper_and_fail_a_hot_load(client: httpx.AsyncClient, settings: GatewaySettings) -> None:
    """The active stack record edited in Redis (α changed, signature kept, revision bumped):
    the replica refuses it and counts a failed hot-load; then the revision counter goes back to
    0, as after a Redis data loss: the replica keeps revision 1 and reports the registry behind."""
    keys = RegistryKeys(settings.redis.key_prefix)
    async with aioredis.Redis.from_url(settings.redis.url) as redis:
        record = orjson.loads(await redis.get(keys.stack(MODEL)))
        record |= {"revision": 2, "entries": [{**record["entries"][0], "alpha": 2 * ALPHA}]}
        await redis.set(keys.stack(MODEL), orjson.dumps(record))
        await redis.set(keys.stack_revision(MODEL), 2)
    r = await client.get(f"/models/{MODEL}/stack", headers=ADMIN)
    assert r.status_code == 409 and r.json()["error"]["served_revision"] == 1, r.text
    async with aioredis.Redis.from_url(settings.redis.url) as redis:  # then the counter is lost
        await redis.set(keys.stack_revision(MODEL), 0)
    await client.get(f"/models/{MODEL}/stack", headers=ADMIN)  # the route refreshes the replica
    ready = (await client.get("/v2/health/ready")).json()
    assert "behind the served revision 1" in ready["problems"][MODEL]["error"], ready


async def phase_a(client: httpx.AsyncClient, settings: GatewaySettings, rows: np.ndarray) -> None:
    """A patch goes live, a tampered one fails to load, the broken model errs three times,
    the patch serves once."""
    r = await register_patch(client, "race", random_patch(seed=1))
    assert r.status_code == 201, r.text
    body = {"entries": [{"patch": "race", "version": 1, "alpha": ALPHA}], "expected_revision": 0}
    r = await client.put(f"/models/{MODEL}/stack", headers=ADMIN, json=body)
    assert r.status_code == 200, r.text
    await tamper_and_fail_a_hot_load(client, settings)
    for _ in range(3):
        r = await client.post("/predict", headers=PREDICT, json=broken_request(rows))
        assert r.status_code == 502, r.text
    # Series created on first use (per-patch latency) must exist before phase B to show a rate.
    body = {"model": MODEL, "instances": rows[:4].tolist()}
    assert (await client.post("/predict", headers=PREDICT, json=body)).status_code == 200


def broken_request(rows: np.ndarray) -> dict:
    return {"model": "broken", "instances": rows[:2].tolist()}


async def assert_every_shipped_query_returns_data(prom: Prom, groups: list[dict]) -> None:
    assert all(rule["health"] == "ok" for g in groups for rule in g["rules"]), groups
    for where, expr in (dashboard_queries() | rule_queries()).items():
        result = await prom.query(expr)
        assert result, f"{where} returned no data: {expr}"
        assert any(np.isfinite(float(s["value"][1])) for s in result), (where, result)


async def assert_bias_matches_fairlearn(
    prom: Prom, stage: str, labels: list[str], groups: dict[str, list[str]], truth: list[str]
) -> None:
    """The symmetric metrics per attribute, and TrustyAI's signed SPD / DIR per race group."""
    y_true = np.array([t == POSITIVE for t in truth], dtype=int)
    y_pred = np.array([label == POSITIVE for label in labels], dtype=int)
    for attr, column in groups.items():
        where = f'model="{MODEL}", attribute="{attr}", stage="{stage}"'
        kw = {"sensitive_features": column}
        expected = {
            "demographic_parity_difference": demographic_parity_difference(y_true, y_pred, **kw),
            "demographic_parity_ratio": demographic_parity_ratio(y_true, y_pred, **kw),
            "equalized_odds_difference": equalized_odds_difference(y_true, y_pred, **kw),
            "worst_group_accuracy": group_report(
                np.array(truth), np.array(labels), np.array(column)
            ).worst_group_acc,
        }
        for name, value in expected.items():
            got = await prom.value(f"eraser:bias_{name}:rate1h{{{where}}}")
            assert got == pytest.approx(value, abs=TOL), (name, stage, attr)
    rates = MetricFrame(
        metrics=selection_rate, y_true=y_true, y_pred=y_pred, sensitive_features=groups["race"]
    ).by_group
    for group in ("African-American", "Hispanic", "Other"):
        where = f'model="{MODEL}", attribute="race", stage="{stage}", group="{group}"'
        spd = await prom.value(f"eraser:bias_spd:rate1h{{{where}}}")
        dir_ = await prom.value(f"eraser:bias_dir:rate1h{{{where}}}")
        assert spd == pytest.approx(rates[group] - rates["Caucasian"], abs=TOL)
        assert dir_ == pytest.approx(rates[group] / rates["Caucasian"], abs=TOL)


async def test_prometheus_bias_equals_fairlearn_and_every_shipped_query_returns_data(
    prometheus: str, settings: GatewaySettings, tmp_path: Path
) -> None:
    rows = load_compas().X[:N_ROWS]
    with (
        running_server(create_app(settings), **FAST) as gateway,
        running_prometheus(prometheus, gateway, tmp_path) as prom_url,
    ):
        async with (
            httpx.AsyncClient(base_url=gateway, timeout=10) as client,
            httpx.AsyncClient(base_url=prom_url, timeout=10) as prom_client,
        ):
            prom = Prom(prom_client)
            # All 24 bias series (race: 4 groups, sex: 2; 2 stages; 2 classes) scraped at zero.
            await prom.until('count(eraser_bias_decisions_total{model="compas"} == 0)', 24)
            await phase_a(client, settings, rows)
            await prom.until('sum(eraser_requests_total{model="broken"})', 3)
            # Phase B, after a scrape: monitored traffic, feedback, more errors.
            raw, fair, race, sex, truth = await serve_and_label(client, rows)
            for _ in range(3):
                await client.post("/predict", headers=PREDICT, json=broken_request(rows))
            await prom.until('sum(eraser_requests_total{model="broken"})', 6)
            await prom.until(
                'sum(eraser_bias_feedback_total{attribute="race", stage="fair"})', N_ROWS
            )
            groups = await prom.rules_evaluated_after(time.time())

            await assert_every_shipped_query_returns_data(prom, groups)
            for stage, labels in (("raw", raw), ("fair", fair)):
                await assert_bias_matches_fairlearn(
                    prom, stage, labels, {"race": race, "sex": sex}, truth
                )
    assert raw != fair  # the patch flips some decisions: the flip share is not trivially 0
