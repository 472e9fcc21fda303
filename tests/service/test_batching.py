"""Dynamic batching: coalesce while busy, never mix stacks, split results and errors exactly."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np
import pytest

from service.batching import MicroBatcher
from service.runtime.stack import LoadedStack

STACK_A = LoadedStack(model="m", revision=1)
STACK_B = LoadedStack(model="m", revision=2)


@dataclass
class Rows:
    """A sliceable result that remembers which stack produced it."""

    values: np.ndarray
    revision: int

    def rows(self, start: int, stop: int) -> Rows:
        return Rows(self.values[start:stop], self.revision)


class Recorder:
    """The batcher's ``infer``: records each call, can be held open to build a queue."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []  # (revision, rows)
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail = False

    async def __call__(self, stack: LoadedStack, x: np.ndarray) -> Rows:
        self.calls.append((stack.revision, len(x)))
        await self.gate.wait()
        if self.fail:
            raise RuntimeError("upstream down")
        return Rows(x * 10, stack.revision)


def batch(value: float, n: int = 1) -> np.ndarray:
    return np.full((n, 2), value)


async def test_a_lone_request_goes_at_once_and_alone() -> None:
    infer = Recorder()
    result = await MicroBatcher(infer, max_rows=64, max_in_flight=1).submit(STACK_A, batch(1.0))
    assert infer.calls == [(1, 1)]
    np.testing.assert_array_equal(result.values, batch(10.0))


async def test_requests_queued_behind_a_busy_slot_share_one_call_and_get_their_rows() -> None:
    infer, sizes = Recorder(), []
    batcher = MicroBatcher(infer, max_rows=64, max_in_flight=1, on_batch=sizes.append)
    infer.gate.clear()
    first = asyncio.ensure_future(batcher.submit(STACK_A, batch(1.0)))
    await asyncio.sleep(0)
    rest = [asyncio.ensure_future(batcher.submit(STACK_A, batch(v, 2))) for v in (2.0, 3.0, 4.0)]
    await asyncio.sleep(0)
    infer.gate.set()
    results = await asyncio.gather(first, *rest)
    assert infer.calls == [(1, 1), (1, 6)] and sizes == [1, 3]
    for value, result in zip((1.0, 2.0, 3.0, 4.0), results, strict=True):
        np.testing.assert_array_equal(result.values, np.full_like(result.values, value * 10))
    assert [len(r.values) for r in results] == [1, 2, 2, 2]


async def test_requests_on_different_stacks_never_share_a_call() -> None:
    infer = Recorder()
    batcher = MicroBatcher(infer, max_rows=64, max_in_flight=1)
    infer.gate.clear()
    busy = asyncio.ensure_future(batcher.submit(STACK_A, batch(0.0)))
    await asyncio.sleep(0)
    queued = [
        asyncio.ensure_future(batcher.submit(stack, batch(1.0)))
        for stack in (STACK_A, STACK_B, STACK_B, STACK_A)
    ]
    await asyncio.sleep(0)
    infer.gate.set()
    results = await asyncio.gather(busy, *queued)
    assert infer.calls == [(1, 1), (1, 1), (2, 2), (1, 1)]
    assert [r.revision for r in results] == [1, 1, 2, 2, 1]


async def test_max_rows_caps_a_batch_but_an_oversized_request_still_travels() -> None:
    infer = Recorder()
    batcher = MicroBatcher(infer, max_rows=4, max_in_flight=1)
    infer.gate.clear()
    busy = asyncio.ensure_future(batcher.submit(STACK_A, batch(0.0, 9)))
    await asyncio.sleep(0)
    queued = [asyncio.ensure_future(batcher.submit(STACK_A, batch(1.0, 3))) for _ in range(2)]
    await asyncio.sleep(0)
    infer.gate.set()
    await asyncio.gather(busy, *queued)
    assert infer.calls == [(1, 9), (1, 3), (1, 3)]


async def test_a_failed_call_fails_every_request_in_it() -> None:
    infer = Recorder()
    batcher = MicroBatcher(infer, max_rows=64, max_in_flight=1)
    infer.gate.clear()
    infer.fail = True
    waiters = [asyncio.ensure_future(batcher.submit(STACK_A, batch(1.0))) for _ in range(3)]
    await asyncio.sleep(0)
    infer.gate.set()
    for waiter in waiters:
        with pytest.raises(RuntimeError, match="upstream down"):
            await waiter
    infer.fail = False
    assert (await batcher.submit(STACK_A, batch(2.0))).revision == 1  # slots were released
