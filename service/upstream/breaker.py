"""A circuit breaker for one upstream: purgatory's state machine with three additions.

Half-open admits exactly one trial call
(purgatory lets every concurrent caller through, which stampedes a recovering upstream), and the
``OpenedState`` exception that purgatory re-raises on every rejected call has its traceback
cleared, since re-raising one instance keeps appending frames (and the request bodies they
reference) for as long as the circuit stays open.

The open period backs off. A fixed period trades recovery time against load on a dead upstream:
10 s kept traffic out for ~8 s after a 1 s outage, while a short fixed period would probe a
black box that stays down several times a second for ever. So the circuit first opens for
``Backoff.first_s`` (a fraction of a second), every failed trial multiplies the period by
``factor`` up to ``max_s``, and a successful trial closes the circuit, which starts the next
opening from ``first_s`` again. A short outage thus ends for callers within about its own length,
and a long one costs the upstream one trial per ``max_s``. Each period is shortened by up to
``JITTER`` at random, so replicas that opened together do not probe in step; the configured
values stay upper bounds.

purgatory is kept rather than replaced: its ``Context`` reads the open period from its public
``ttl`` attribute each time a call arrives in the open state, so the backoff is only a matter of
setting ``ttl`` whenever the circuit opens (see ``_record``); its state machine, failure counting
and events stay as they were.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, Literal, TypeVar

from purgatory import AsyncCircuitBreakerFactory
from purgatory.domain.model import CLOSED, HALF_OPENED, OPENED, Context, OpenedState

from service.errors import CircuitOpen, UpstreamStatus, UpstreamTimeout, UpstreamUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")
BreakerState = Literal["closed", "open", "half-opened"]
OpenHook = Callable[[int, float], None]  # (consecutive failures, seconds until the trial)

JITTER: Final = 0.1  # each open period is shortened by up to this fraction, at random

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


@dataclass(frozen=True)
class Backoff:
    """How long the circuit stays open before each trial call (see the module docstring)."""

    first_s: float
    factor: float
    max_s: float

    def __post_init__(self) -> None:
        if not 0 < self.first_s <= self.max_s or self.factor < 1:
            raise ValueError(f"need 0 < first_s <= max_s and factor >= 1: {self}")

    def next_base(self, previous_s: float | None) -> float:
        """The un-jittered period: ``first_s`` on opening, else ``previous_s × factor``, capped.

        ``previous_s`` is None when the circuit opens from closed, the period of the opening
        before when a trial call failed."""
        if previous_s is None:
            return self.first_s
        return min(self.max_s, previous_s * self.factor)

    @staticmethod
    def jittered(base_s: float) -> float:
        """``base_s`` shortened by up to ``JITTER``, never lengthened, so the bounds hold."""
        return base_s * (1.0 - JITTER * random.random())


class CircuitBreaker:
    """One purgatory circuit with a single half-open trial, a backed-off open period and
    leak-free rejections."""

    def __init__(
        self,
        name: str,
        threshold: int,
        backoff: Backoff,
        trial_budget_s: float,
        on_open: OpenHook,
    ) -> None:
        self._name = name
        self._backoff = backoff
        self._factory = AsyncCircuitBreakerFactory(
            default_threshold=threshold, default_ttl=backoff.first_s
        )
        # Until start() registers it with the factory, an unregistered closed context keeps
        # ``state`` answerable; it is replaced, not used for calls.
        self._ctx = Context(name, threshold, backoff.first_s)
        self._trial_budget_s = trial_budget_s
        self._on_open = on_open
        self._failures = 0
        self._trial_in_flight = False
        self._open_base_s: float | None = None  # un-jittered period of the latest opening

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
            self._set_open_period(reopened=before == HALF_OPENED)
            self._on_open(self._failures, self._ctx.ttl)
        elif after == CLOSED and before != CLOSED:
            log.info("circuit for upstream of model %s closed again", self._name)
        await self._drain()

    def _set_open_period(self, *, reopened: bool) -> None:
        """Back off after a failed trial, start over after a closed spell.

        Runs before any await, so no call can be admitted under the previous period."""
        previous = self._open_base_s if reopened else None
        self._open_base_s = self._backoff.next_base(previous)
        self._ctx.ttl = self._backoff.jittered(self._open_base_s)

    async def _drain(self) -> None:
        """Hand purgatory its state-change events; unhandled they would pile up forever."""
        messages = self._ctx.messages
        while messages:
            await self._factory.messagebus.handle(messages.pop(0), self._factory.uow)
