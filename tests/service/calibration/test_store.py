"""Calibration sets on a real Redis: content-addressed, kept forever, re-hashed on every read."""

from __future__ import annotations

import hashlib

import pytest
import redis.asyncio as aioredis

from service.calibration.loader import load_calibration
from service.calibration.meta import CalibrationMeta, describe
from service.calibration.store import CalibrationStore
from service.errors import CalibrationSetNotFound, IntegrityError
from tests.conftest import REDIS_URL
from tests.service.calibration.builders import (
    BIAS,
    TARGET,
    compas_columns,
    csv_bytes,
    tabular_model,
)


@pytest.fixture
def store(redis_client: aioredis.Redis, key_prefix: str) -> CalibrationStore:
    return CalibrationStore(redis_client, prefix=key_prefix)


def _upload(bias: str = BIAS) -> tuple[bytes, CalibrationMeta]:
    columns = compas_columns()
    columns["age_group"] = ["young", "old"] * 3
    data = csv_bytes(columns)
    model = tabular_model()
    extra = ["age_group"] if bias == BIAS else [BIAS]
    cal = load_calibration(data, model, TARGET, [bias, *extra], 100)
    return data, describe(cal, model, TARGET, "compas.csv", len(data))


async def test_put_then_get_returns_the_bytes_and_meta(store: CalibrationStore) -> None:
    data, meta = _upload()
    sha = await store.put(data, meta)
    assert sha == hashlib.sha256(data).hexdigest()
    assert await store.get(sha) == (data, meta)


async def test_sets_never_expire(store: CalibrationStore, redis_client: aioredis.Redis) -> None:
    data, meta = _upload()
    sha = await store.put(data, meta)
    assert await redis_client.ttl(store.keys.calibration(sha)) == -1
    assert await redis_client.ttl(store.keys.calibration_meta(sha)) == -1


async def test_put_is_idempotent_and_keeps_the_first_meta(store: CalibrationStore) -> None:
    data, first = _upload()
    again = first.model_copy(update={"filename": "renamed.csv"})
    assert await store.put(data, first) == await store.put(data, again)
    assert (await store.get(first.sha256))[1] == first


async def test_same_bytes_for_another_bias_choice_share_one_entry(
    store: CalibrationStore,
) -> None:
    data, first = _upload()
    _, second = _upload(bias="age_group")
    assert await store.put(data, first) == await store.put(data, second)
    assert (await store.get(first.sha256))[1] == first


async def test_put_refuses_meta_for_other_bytes(store: CalibrationStore) -> None:
    data, meta = _upload()
    with pytest.raises(IntegrityError, match="hash"):
        await store.put(data + b"\n", meta)


async def test_unknown_sha_is_not_found(store: CalibrationStore) -> None:
    with pytest.raises(CalibrationSetNotFound):
        await store.get("0" * 64)
    with pytest.raises(CalibrationSetNotFound):
        await store.get("not-a-digest")


async def test_tampered_bytes_are_refused(
    store: CalibrationStore, redis_client: aioredis.Redis
) -> None:
    data, meta = _upload()
    sha = await store.put(data, meta)
    await redis_client.set(store.keys.calibration(sha), data.replace(b"Caucasian", b"Other"))
    with pytest.raises(IntegrityError, match="hash mismatch"):
        await store.get(sha)


async def test_putting_again_repairs_tampered_bytes(
    store: CalibrationStore, redis_client: aioredis.Redis
) -> None:
    data, meta = _upload()
    sha = await store.put(data, meta)
    await redis_client.set(store.keys.calibration(sha), b"garbage")
    await store.put(data, meta)
    assert (await store.get(sha))[0] == data


async def test_meta_moved_to_another_key_is_refused(
    store: CalibrationStore, redis_client: aioredis.Redis
) -> None:
    data, meta = _upload()
    sha = await store.put(data, meta)
    other = b"other bytes"
    other_sha = hashlib.sha256(other).hexdigest()
    await redis_client.set(store.keys.calibration(other_sha), other)
    raw = await redis_client.get(store.keys.calibration_meta(sha))
    await redis_client.set(store.keys.calibration_meta(other_sha), raw)
    with pytest.raises(IntegrityError, match="names"):
        await store.get(other_sha)


def test_store_needs_a_bytes_client() -> None:
    with pytest.raises(ValueError, match="decode_responses=False"):
        CalibrationStore(aioredis.Redis.from_url(REDIS_URL, decode_responses=True))


async def test_pairs_are_kept_by_hash_and_re_hashed_on_every_read(
    store: CalibrationStore, redis_client: aioredis.Redis
) -> None:
    pairs = b"PK\x03\x04 an FMD job's pairs NPZ"
    sha = await store.put_pairs(pairs)
    assert sha == hashlib.sha256(pairs).hexdigest() and await store.get_pairs(sha) == pairs
    assert await redis_client.ttl(store.keys.calibration(sha)) == -1  # kept, like the sets
    await redis_client.set(store.keys.calibration(sha), pairs + b"!")
    with pytest.raises(IntegrityError, match="hash mismatch"):
        await store.get_pairs(sha)
    with pytest.raises(CalibrationSetNotFound):
        await store.get_pairs("0" * 64)
    with pytest.raises(CalibrationSetNotFound):
        await store.get_pairs("../calibration:x")
