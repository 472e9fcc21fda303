"""A circuit breaker for one upstream: purgatory's state machine with two additions.

Half-open admits exactly one trial call
(purgatory lets every concurrent caller through, which stampedes a recovering upstream), and the
``OpenedState`` exception that purgatory re-raises on every rejected call has its traceback
cleared, since re-raising one instance keeps appending frames (and the request bodies they
reference) for as long as the circuit stays open.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Final, Literal, TypeVar

from purgatory import AsyncCircuitBreakerFactory
from purgatory.domain.model import CLOSED, HALF_OPENED, OPENED, Context, OpenedState

from service.errors import CircuitOpen, UpstreamStatus, UpstreamTimeout, UpstreamUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")
BreakerState = Literal["closed", "open", "half-opened"]

_STATE_NAMES: Final[dict[str, BreakerState]] = {
    CLOSED: "closed",
    OPENED: "open",
    HALF_OPENED: "half-opened",
}


def counts_as_breaker_failure(exc: BaseException) -> bool:
    """Outcomes that say the upstream is down or drowning (see the module docstring)."""
    if isinstance(exc, UpstreamStatus):
        return int(exc.details.get("upstream_status", 500)) >= 500
    return isinstance(exc, UpstreamUnavailable | UpstreamTimeout)


class CircuitBreaker:
    """One purgatory circuit with a single half-open trial and leak-free rejections."""

    def __init__(
        self,
        name: str,
        threshold: int,
        reset_s: float,
        trial_budget_s: float,
        on_open: Callable[[int], None],
    ) -> None:
        self._name = name
        self._factory = AsyncCircuitBreakerFactory(default_threshold=threshold, default_ttl=reset_s)
        # Until start() registers it with the factory, an unregistered closed context keeps
        # ``state`` answerable; it is replaced, not used for calls.
        self._ctx = Context(name, threshold, reset_s)
        self._trial_budget_s = trial_budget_s
        self._on_open = on_open
        self._failures = 0
        self._trial_in_flight = False

    async def start(self) -> None:
        self._ctx = (await self._factory.get_breaker(self._name)).context

    @property
    def state(self) -> BreakerState:
        return _STATE_NAMES[self._ctx.state]

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn`` if the circuit admits it and record the outcome."""
        trial = self._admit()
        try:
            result = await fn()
        except asyncio.CancelledError:
            raise  # says nothing about the upstream
        except Exception as exc:
            await self._record(exc)
            raise
        else:
            await self._record(None)
            return result
        finally:
            if trial:
                self._trial_in_flight = False

    def _admit(self) -> bool:
        """Raise ``CircuitOpen`` or let the call through; True when it is the half-open trial."""
        if self._trial_in_flight:
            raise self._rejection(self._trial_budget_s, trial=True)
        try:
            self._ctx.handle_new_request()
        except OpenedState as opened:
            opened.__traceback__ = None  # purgatory raises this one instance on every rejection
            remaining = max(0.0, opened.opened_at + self._ctx.ttl - time.time())
        else:
            self._trial_in_flight = self._ctx.state == HALF_OPENED
            return self._trial_in_flight
        raise self._rejection(remaining, trial=False)

    def _rejection(self, retry_after_s: float, *, trial: bool) -> CircuitOpen:
        note = " (a trial call is in flight)" if trial else ""
        return CircuitOpen(
            f"circuit open for upstream of model {self._name} after {self._failures} "
            f"consecutive failures{note}; retrying in {retry_after_s:.2f} s",
            retry_after_s=round(retry_after_s, 3),
        )

    async def _record(self, exc: Exception | None) -> None:
        before = self._ctx.state
        if exc is not None and counts_as_breaker_failure(exc):
            self._failures += 1
            self._ctx.handle_exception(exc)
        else:
            self._failures = 0
            self._ctx.handle_end_request()
        after = self._ctx.state
        if after == OPENED and before != OPENED:
            self._on_open(self._failures)
        elif after == CLOSED and before != CLOSED:
            log.info("circuit for upstream of model %s closed again", self._name)
        await self._drain()

    async def _drain(self) -> None:
        """Hand purgatory its state-change events; unhandled they would pile up forever."""
        messages = self._ctx.messages
        while messages:
            await self._factory.messagebus.handle(messages.pop(0), self._factory.uow)
