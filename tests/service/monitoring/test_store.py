"""The served-decision store on a real Redis: random ids, expiry, eviction and one label per
instance."""

from __future__ import annotations

import asyncio
import re
import time

import pytest
import redis.asyncio as aioredis

from service.errors import RequestNotFound
from service.monitoring.config import FeedbackSettings
from service.monitoring.store import ServedDecisions, ServedDecisionStore, new_request_id
from tests.fixtures_upstream import refused_port

RECORD = ServedDecisions("compas", raw=[1, 0], fair=[0, 0], groups={"race": ["Other", None]})


def store(redis: aioredis.Redis, prefix: str, **settings: object) -> ServedDecisionStore:
    return ServedDecisionStore(redis, prefix, FeedbackSettings(**settings))


def one_char_off(request_id: str) -> str:
    flipped = "0" if request_id[-1] != "0" else "1"
    return request_id[:-1] + flipped


async def record_keys(redis: aioredis.Redis, s: ServedDecisionStore) -> list[bytes]:
    return [k async for k in redis.scan_iter(match=s.record_key("*"), count=1000)]


async def test_a_stored_request_is_read_back_by_its_id(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    s = store(redis_client, key_prefix)
    first, second = await s.put(RECORD), await s.put(RECORD)
    assert first != second
    assert await s.get(first) == RECORD
    assert (await s.get(second)).groups_of(1) == {"race": None}


async def test_ids_are_128_random_bits_in_hex_and_never_repeat(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    s = store(redis_client, key_prefix)
    ids = [await s.put(RECORD) for _ in range(200)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    assert len(set(ids)) == len(ids)
    assert len({i[:8] for i in ids}) > 190  # no shared time-like prefix: the bits are random


@pytest.mark.parametrize(
    "request_id",
    ["not-an-id", "1000-0", "9" * 40 + "-0", "", "g" * 32, "A" * 32, "a" * 33, "a" * 10_000],
)
async def test_a_malformed_id_is_unknown_without_asking_redis(
    redis_client: aioredis.Redis, key_prefix: str, request_id: str
) -> None:
    s = store(redis_client, key_prefix)
    s.redis = aioredis.Redis(port=refused_port())  # a Redis call would fail
    try:
        with pytest.raises(RequestNotFound, match="not a request id") as caught:
            await s.get(request_id)
    finally:
        await s.redis.aclose()
    assert caught.value.details["reason"] == "unknown"
    assert len(str(caught.value)) < 200  # an overlong id is not echoed whole


async def test_an_id_never_issued_or_one_character_off_is_unknown(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    s = store(redis_client, key_prefix, ttl_s=60, max_requests=7)
    issued = await s.put(RECORD)
    for request_id in (new_request_id(), one_char_off(issued)):
        with pytest.raises(RequestNotFound) as caught:
            await s.get(request_id)
        assert caught.value.details["reason"] == "unknown"
    message = str(caught.value)
    assert "accepted for 60 s" in message and "keeps the last 7" in message


async def test_a_record_and_the_id_list_expire_with_the_ttl(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    s = store(redis_client, key_prefix, ttl_s=1)
    request_id = await s.put(RECORD)
    assert 0 < await redis_client.pttl(s.record_key(request_id)) <= 1000
    assert 0 < await redis_client.pttl(s.index) <= 1000
    deadline = time.monotonic() + 5.0
    while await redis_client.exists(s.record_key(request_id)) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    with pytest.raises(RequestNotFound) as caught:
        await s.get(request_id)
    assert caught.value.details["reason"] == "unknown"
    assert not await redis_client.exists(s.index)


async def test_the_store_keeps_the_newest_max_requests_records(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    s = store(redis_client, key_prefix, max_requests=10)
    ids = [await s.put(RECORD) for _ in range(300)]
    assert await redis_client.llen(s.index) == 10
    assert len(await record_keys(redis_client, s)) == 10
    for request_id in ids[-10:]:
        assert await s.get(request_id) == RECORD
    with pytest.raises(RequestNotFound) as caught:
        await s.get(ids[-11])
    assert caught.value.details["reason"] == "unknown"


async def test_a_lowered_bound_evicts_the_excess_on_the_next_write(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    before = store(redis_client, key_prefix, max_requests=1000)
    ids = [await before.put(RECORD) for _ in range(30)]
    after = store(redis_client, key_prefix, max_requests=10)
    ids.append(await after.put(RECORD))
    assert len(await record_keys(redis_client, after)) == 10
    assert await redis_client.lrange(after.index, 0, -1) == [i.encode() for i in ids[-10:]]


async def test_an_instance_can_be_labelled_once_and_the_mark_expires_with_the_ttl(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    s = store(redis_client, key_prefix, ttl_s=120)
    request_id = await s.put(RECORD)
    assert await s.claim(request_id, 1) is True
    assert await s.claim(request_id, 0) is True
    assert await s.claim(request_id, 1) is False
    assert 0 < await redis_client.ttl(s._claims(request_id)) <= 120
