"""The registry's mutable state is signed too: stacks (entries, α, revision) and each version's
status. A record edited or copied by someone with write access to Redis does not verify."""

from __future__ import annotations

import orjson
import pytest
import redis.asyncio as aioredis

from service.errors import InvalidStoredRecord, PatchRejected
from service.registry.models import VALIDATED, StackEntry, VersionStatus
from service.registry.store import Registry
from tests.service.registry.conftest import SERVABLE, make_spec

MODEL = "credit"


async def test_a_status_copied_from_another_version_does_not_verify(
    registry: Registry, redis_client: aioredis.Redis
) -> None:
    good = VersionStatus(status=VALIDATED, reason="EO 20 → 4")
    await registry.register_version("race", make_spec(), b"one", status=good)
    await registry.register_version("race", make_spec(), b"two")
    copied = await redis_client.hgetall(registry.keys.status("race", 1))
    await redis_client.hset(registry.keys.status("race", 2), mapping=copied)
    assert (await registry.get_status("race", 1))["status"] == "validated"
    assert (await registry.get_status("race", 2))["status"] == "unverified"
    with pytest.raises(PatchRejected, match="unverified"):
        await registry.set_stack(MODEL, [StackEntry(patch="race", version=2)], 0)


async def test_a_status_with_garbage_fields_is_unverified_not_an_error(
    registry: Registry, redis_client: aioredis.Redis
) -> None:
    await registry.register_version("race", make_spec(), b"one", status=SERVABLE)
    junk = {"status": "NOT A STATUS", "reason": b"\xff\xfe", "signature": "x" * 5000}
    await redis_client.hset(registry.keys.status("race", 1), mapping=junk)
    assert (await registry.get_status("race", 1))["status"] == "unverified"


async def test_stacks_are_signed_and_a_changed_alpha_is_refused(
    registry: Registry, redis_client: aioredis.Redis
) -> None:
    await registry.register_version("race", make_spec(), b"one", status=SERVABLE)
    await registry.set_stack(MODEL, [StackEntry(patch="race", version=1, alpha=0.5)], 0)
    stored = orjson.loads(await redis_client.get(registry.keys.stack(MODEL)))
    assert len(stored["signature"]) == 64
    stored["entries"][0]["alpha"] = 2.0
    await redis_client.set(registry.keys.stack(MODEL), orjson.dumps(stored))
    with pytest.raises(InvalidStoredRecord, match="fails its signature"):
        await registry.get_stack(MODEL)
    stranger = Registry(redis_client, b"another-key", prefix=registry.keys.prefix)
    await registry.set_stack(MODEL, [], 1)
    with pytest.raises(InvalidStoredRecord, match="fails its signature"):
        await stranger.get_stack(MODEL)


async def test_a_stack_signed_for_another_model_is_refused(
    registry: Registry, redis_client: aioredis.Redis
) -> None:
    await registry.set_stack("other", [], 0)
    record = await redis_client.get(registry.keys.stack("other"))
    await redis_client.set(registry.keys.stack(MODEL), record)
    with pytest.raises(InvalidStoredRecord, match="signed for model 'other'"):
        await registry.get_stack(MODEL)


async def test_revision_floor_carries_the_numbering_on_after_a_data_loss(
    registry: Registry,
) -> None:
    stack = await registry.set_stack(MODEL, [], 0, revision_floor=58)
    assert stack.revision == 58 and await registry.get_revision(MODEL) == 58
    assert (await registry.set_stack(MODEL, [], 58)).revision == 59
    assert (await registry.history(MODEL, 1))[0].revision == 58


async def test_a_revision_counter_that_is_not_a_number_is_an_invalid_record(
    registry: Registry, redis_client: aioredis.Redis
) -> None:
    await redis_client.set(registry.keys.stack_revision(MODEL), b"seven")
    with pytest.raises(InvalidStoredRecord, match="not a number"):
        await registry.get_revision(MODEL)
