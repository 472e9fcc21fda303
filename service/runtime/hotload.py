"""Hot-loading: follow each model's active stack revision and swap fully loaded stacks in.

Changes are learnt from pub/sub (fast) and from polling the revision (pub/sub drops messages on
reconnect). A new stack is built and warmed beside the old one; only then is one reference
replaced. A failed load keeps the old stack, is logged, and is counted.

Redis is not trusted to decide what is served: the stack record must verify under the signing
key and name the revision the registry announces; every entry must be validated or approved
(signed status), within the configured α range; and a replica never goes back to a lower
revision than it serves. A registry that comes back behind (Redis restarted empty, or restored
from an old snapshot) therefore leaves every replica serving its last verified stack, saying so
in readiness detail and in ``eraser_registry_behind``, until an operator carries the revision on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

from service.errors import EraserError, InvalidStoredRecord, PatchFailed
from service.metrics import GatewayMetrics
from service.registry.store import Registry
from service.runtime.stack import LoadedStack, SessionCache, StackLoader
from service.settings import ModelConfig, RuntimeSettings

log = logging.getLogger(__name__)

RunBlocking = Callable[..., Awaitable[Any]]
UNREADABLE = -1  # the "revision" of a counter that is not a number
T = TypeVar("T")


def blocking_runner(executor: Executor) -> RunBlocking:
    """``await run(fn, *args)``: blocking work (session builds and warm-ups) on ``executor``."""

    async def run(fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)

    return run


class StackWatcher:
    """Holds the serving ``LoadedStack`` per model and keeps it at the registry's revision."""

    def __init__(
        self,
        registry: Registry,
        models: list[ModelConfig],
        runtime: RuntimeSettings,
        metrics: GatewayMetrics,
        run_blocking: RunBlocking,
    ) -> None:
        self.registry = registry
        self.models = {m.name: m for m in models}
        self.runtime = runtime
        self.metrics = metrics
        self.run_blocking = run_blocking
        self.cache = SessionCache()
        self.loader = StackLoader(registry, runtime, self.cache)
        self._stacks: dict[str, LoadedStack] = {}
        self._errors: dict[str, str] = {}
        self._failed: dict[str, int] = {}
        self._locks = {name: asyncio.Lock() for name in self.models}
        self._tasks: list[asyncio.Task[None]] = []

    # -- serving side -------------------------------------------------------------------------
    def current(self, model: str) -> LoadedStack:
        """The stack a request uses, taken once; 503 while the active stack is not loaded."""
        stack = self._stacks.get(model)
        if stack is None:
            reason = self._errors.get(model, "not loaded yet")
            raise PatchFailed(f"active patch stack of model '{model}' is not loaded: {reason}")
        return stack

    def ready(self, model: str) -> bool:
        return model in self._stacks

    def served_revision(self, model: str) -> int | None:
        stack = self._stacks.get(model)
        return stack.revision if stack else None

    def load_error(self, model: str) -> str | None:
        """Why the registry's active revision is not served, if it is not."""
        return self._errors.get(model)

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        """Load every model's active stack, then follow changes in the background.

        A registry that cannot be reached does not stop the gateway from starting: it starts
        not ready (503s that say why) and the poller keeps trying.
        """
        await asyncio.gather(*(self._first_load(name) for name in self.models))
        self._tasks = [
            asyncio.create_task(self._follow_events(), name="stack-events"),
            asyncio.create_task(self._poll(), name="stack-poll"),
        ]

    async def _first_load(self, model: str) -> None:
        try:
            await self.refresh(model)
        except Exception as exc:
            self._errors[model] = f"registry unreachable: {exc}"
            log.error("cannot read the active stack of %s at start-up: %s", model, exc)

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Cancel the followers; shutdown never waits on Redis for longer than ``timeout_s``.

        The cancellation is repeated until the tasks end: redis-py's asyncio client can swallow
        a ``CancelledError`` that arrives in the middle of a command, and the follower would
        then carry on to its next poll.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        pending = set(self._tasks)
        while pending and loop.time() < deadline:
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=min(0.1, deadline - loop.time()))
        self._tasks = []

    # -- loading ------------------------------------------------------------------------------
    async def refresh(self, model: str) -> None:
        """Bring ``model`` to the registry's active revision if it differs from the served one.

        A revision that failed to load is not retried (the failure is already logged and
        counted) unless nothing is served yet, where every poll tries again.
        """
        async with self._locks[model]:
            served = self._stacks.get(model)
            try:
                revision = await self.registry.get_revision(model)
            except InvalidStoredRecord as exc:
                if self._failed.get(model) != UNREADABLE:  # counted once, not on every poll
                    self._load_failed(model, UNREADABLE, exc.message)
                return
            if served is not None and revision == served.revision:
                self._in_sync(model)
                return
            if served is not None and revision == self._failed.get(model):
                return
            if served is not None and revision < served.revision:
                self._behind(model, revision, served.revision)
                return
            self.metrics.registry_behind.labels(model).set(0)
            await self._swap_in(model, revision)

    async def _swap_in(self, model: str, revision: int) -> None:
        """Read, build, warm and check the active stack; swap it in only if all of that works.

        A stack record that fails its schema (e.g. fields written by hand) is a failed load like
        any other: counted, logged, the old stack kept. Redis not answering is not: it
        propagates, and the next poll tries again.
        """
        try:
            stack = await self.registry.get_stack(model)
        except InvalidStoredRecord as exc:
            self._load_failed(model, revision, exc.message)
            return
        if stack.revision != revision:  # a replayed older record, or a hand-edited counter
            self._load_failed(
                model,
                revision,
                f"the registry announces revision {revision} but its signed stack is "
                f"revision {stack.revision}",
            )
            return
        try:
            loaded = await self.loader.load(stack, self.models[model], self.run_blocking)
        except Exception as exc:  # typed load errors and registry/Redis failures alike
            reason = exc.message if isinstance(exc, EraserError) else repr(exc)
            self._load_failed(model, stack.revision, reason)
            return
        self._stacks[model] = loaded  # the swap: one reference
        self._errors.pop(model, None)
        self.cache.retain(
            {
                (p.manifest.name, p.manifest.version)
                for s in self._stacks.values()
                for p in s.patches
            }
        )
        self.metrics.hotloads.labels(model, "success").inc()
        self.metrics.set_active_stack(model, loaded.revision, loaded.describe())
        log.info(
            "model %s now serves stack revision %d: %s", model, loaded.revision, loaded.describe()
        )

    def _in_sync(self, model: str) -> None:
        """The registry announces what is served (again): nothing to report."""
        self.metrics.registry_behind.labels(model).set(0)
        self._errors.pop(model, None)
        self._failed.pop(model, None)

    def _behind(self, model: str, revision: int, served: int) -> None:
        """The registry went back: keep the last verified stack, and say so loudly."""
        self.metrics.registry_behind.labels(model).set(1)
        self._load_failed(
            model,
            revision,
            f"the registry is at revision {revision}, behind the served revision {served} "
            "(Redis lost or restored its data): keeping the last verified stack; see "
            "docs/operations.md, 'Redis lost its data'",
        )

    def _load_failed(self, model: str, revision: int, reason: str) -> None:
        self._errors[model] = f"revision {revision}: {reason}"
        self._failed[model] = revision
        self.metrics.hotloads.labels(model, "failure").inc()
        log.error(
            "hot-load of %s revision %d failed, keeping the old stack: %s", model, revision, reason
        )

    async def _follow_events(self) -> None:
        while True:
            try:
                async for event in self.registry.events():
                    if event.model in self.models:
                        await self.refresh(event.model)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the poller still covers us; reconnect after a pause
                log.warning("stack event subscription lost (%s); resubscribing", exc)
                await asyncio.sleep(self.runtime.poll_interval_s)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.runtime.poll_interval_s)
            for name in self.models:
                try:
                    await self.refresh(name)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if not self.ready(name):
                        self._errors[name] = f"registry unreachable: {exc}"
                    log.warning("revision poll for %s failed: %s", name, exc)
