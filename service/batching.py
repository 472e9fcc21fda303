"""Opportunistic dynamic batching: requests that arrive while earlier batches are in flight ride
together in the next upstream call and the next patch run.

There is no waiting window: a request that finds a free slot is sent at once, alone, so a lone
client sees no added latency. Under load, the per-call costs (an HTTP round trip, a patch run,
the maths) are paid once per batch instead of once per request — on the gateway's one event loop
that is most of what a request costs. Only requests taken with the same stack object share a
batch, so every answer still comes from exactly one stack revision.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, Protocol, Self, TypeVar

import numpy as np

from service.runtime.stack import LoadedStack


class Sliceable(Protocol):
    """A batch result that can be cut back into per-request results (``Prediction`` is one)."""

    def rows(self, start: int, stop: int) -> Self: ...


R = TypeVar("R", bound=Sliceable)


def _new_future() -> asyncio.Future:
    return asyncio.get_running_loop().create_future()


@dataclass
class _Pending:
    stack: LoadedStack
    x: np.ndarray
    future: asyncio.Future = field(default_factory=_new_future)


class MicroBatcher(Generic[R]):
    """One per model. ``max_in_flight`` batches at a time, each of at most ``max_rows`` rows
    (a larger request travels alone)."""

    def __init__(
        self,
        infer: Callable[[LoadedStack, np.ndarray], Awaitable[R]],
        max_rows: int,
        max_in_flight: int,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._infer = infer
        self._max_rows = max_rows
        self._max_in_flight = max_in_flight
        self._on_batch = on_batch
        self._queue: deque[_Pending] = deque()
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, stack: LoadedStack, x: np.ndarray) -> R:
        if not self._queue and self._in_flight < self._max_in_flight:
            return await self._alone(stack, x)
        pending = _Pending(stack, x)
        self._queue.append(pending)
        self._dispatch()
        return await pending.future

    async def _alone(self, stack: LoadedStack, x: np.ndarray) -> R:
        """A free slot and nobody waiting: run in the caller's task (no hand-off, no delay)."""
        self._in_flight += 1
        try:
            if self._on_batch is not None:
                self._on_batch(1)
            return await self._infer(stack, x)
        finally:
            self._in_flight -= 1
            self._dispatch()

    def _dispatch(self) -> None:
        while self._queue and self._in_flight < self._max_in_flight:
            batch = self._take()
            self._in_flight += 1
            task = asyncio.ensure_future(self._run(batch))
            self._tasks.add(task)  # keep a reference until it is done
            task.add_done_callback(self._tasks.discard)

    def _take(self) -> list[_Pending]:
        """The oldest request and those queued behind it on the same stack, up to ``max_rows``."""
        batch = [self._queue.popleft()]
        rows = len(batch[0].x)
        while self._queue and self._queue[0].stack is batch[0].stack:
            if rows + len(self._queue[0].x) > self._max_rows:
                break
            batch.append(self._queue.popleft())
            rows += len(batch[-1].x)
        return batch

    async def _run(self, batch: list[_Pending]) -> None:
        try:
            if self._on_batch is not None:
                self._on_batch(len(batch))
            x = batch[0].x if len(batch) == 1 else np.concatenate([p.x for p in batch])
            result = await self._infer(batch[0].stack, x)
        except Exception as exc:  # every waiter gets the batch's error
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(exc)
        except BaseException:  # cancelled (shutdown): so are the waiters
            for p in batch:
                p.future.cancel()
            raise
        else:
            start = 0
            for p in batch:
                if not p.future.done():  # its caller may have gone away
                    p.future.set_result(result.rows(start, start + len(p.x)))
                start += len(p.x)
        finally:
            self._in_flight -= 1
            self._dispatch()
