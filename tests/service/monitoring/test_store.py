"""The served-decision store on a real Redis: ids, expiry, eviction and one label per instance."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from service.errors import RequestNotFound
from service.monitoring.config import FeedbackSettings
from service.monitoring.store import ServedDecisions, ServedDecisionStore

RECORD = ServedDecisions("compas", raw=[1, 0], fair=[0, 0], groups={"race": ["Other", None]})


def store(redis: aioredis.Redis, prefix: str, **settings: object) -> ServedDecisionStore:
    return ServedDecisionStore(redis, prefix, FeedbackSettings(**settings))


async def test_a_stored_request_is_read_back_by_its_id(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    s = store(redis_client, key_prefix)
    first, second = await s.put(RECORD), await s.put(RECORD)
    assert first != second
    assert await s.get(first) == RECORD
    assert (await s.get(second)).groups_of(1) == {"race": None}


async def test_an_id_never_issued_is_unknown(redis_client: aioredis.Redis, key_prefix: str) -> None:
    s = store(redis_client, key_prefix)
    issued = await s.put(RECORD)
    ms, _, seq = issued.partition("-")
    for request_id in ("not-an-id", f"{ms}-{int(seq) + 5}"):
        with pytest.raises(RequestNotFound) as caught:
            await s.get(request_id)
        assert caught.value.details["reason"] == "unknown"


async def test_an_id_older_than_the_ttl_has_expired(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    s = store(redis_client, key_prefix, ttl_s=60)
    with pytest.raises(RequestNotFound, match="expired: feedback is accepted for 60 s") as caught:
        await s.get("1000-0")  # issued in 1970
    assert caught.value.details["reason"] == "expired"


async def test_the_store_is_bounded_and_says_when_an_id_was_evicted(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    s = store(redis_client, key_prefix, max_requests=10)
    ids = [await s.put(RECORD) for _ in range(300)]
    # "MAXLEN ~" trims whole stream nodes (100 entries by default): at most one node over.
    assert 10 <= await redis_client.xlen(s.stream) <= 110
    with pytest.raises(RequestNotFound, match="evicted: the store keeps the last 10") as caught:
        await s.get(ids[0])
    assert caught.value.details["reason"] == "evicted"
    assert await s.get(ids[-1]) == RECORD


async def test_records_older_than_the_ttl_are_trimmed_on_the_next_write(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    s = store(redis_client, key_prefix, ttl_s=3600)
    for i in range(150):  # entries "from 1970": more than one stream node, so "~" trims them
        await redis_client.xadd(s.stream, {"d": RECORD.to_bytes()}, id=f"1000-{i}")
    await s.put(RECORD)
    assert await redis_client.xlen(s.stream) <= 100


async def test_an_instance_can_be_labelled_once_and_the_mark_expires_with_the_ttl(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    s = store(redis_client, key_prefix, ttl_s=120)
    request_id = await s.put(RECORD)
    assert await s.claim(request_id, 1) is True
    assert await s.claim(request_id, 0) is True
    assert await s.claim(request_id, 1) is False
    assert 0 < await redis_client.ttl(s._claims(request_id)) <= 120
