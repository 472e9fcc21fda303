"""Stack change announcements on pub/sub."""

from __future__ import annotations

import asyncio
from contextlib import aclosing

import redis.asyncio as aioredis

from service.registry.models import StackEvent
from service.registry.store import Registry
from tests.service.registry.conftest import make_spec


async def _wait_for_subscriber(redis: aioredis.Redis, channel: str) -> None:
    """Publishing before the subscription is in place would lose the message."""
    for _ in range(200):
        [(_, count)] = await redis.pubsub_numsub(channel)
        if count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("subscriber never subscribed")


async def test_subscriber_receives_event_after_set_stack(
    registry: Registry, redis_client: aioredis.Redis
) -> None:
    await registry.register_version("race", make_spec("credit"), b"blob")
    async with aclosing(registry.events()) as events:
        first = asyncio.create_task(anext(events))
        await _wait_for_subscriber(redis_client, registry.keys.events_channel())
        await redis_client.publish(registry.keys.events_channel(), b"not an event")
        stack = await registry.set_stack("credit", [], expected_revision=0)
        event = await asyncio.wait_for(first, timeout=5)
    assert event == StackEvent(model="credit", revision=stack.revision)


async def test_closing_the_iterator_unsubscribes(
    registry: Registry, redis_client: aioredis.Redis
) -> None:
    channel = registry.keys.events_channel()
    events = registry.events()
    task = asyncio.create_task(anext(events))
    await _wait_for_subscriber(redis_client, channel)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await events.aclose()
    for _ in range(200):
        [(_, count)] = await redis_client.pubsub_numsub(channel)
        if not count:
            break
        await asyncio.sleep(0.01)
    assert count == 0
