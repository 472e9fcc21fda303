"""Repeated identical errors, logged once per interval with a count.

An open circuit breaker can fail thousands of requests a second; one warning line each would
drown every other log line (and cost CPU). The first occurrence of a key is logged at once;
repeats within ``interval_s`` are counted, and one line with the count follows when the
interval ends — also when no further repeat arrives, so no failure goes unreported.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

MAX_KEYS = 1024  # distinct messages tracked at once; expired ones are dropped first


@dataclass
class _Run:
    since: float
    level: int
    msg: str
    args: tuple[Any, ...]
    repeats: int = 0
    flush: asyncio.TimerHandle | None = field(default=None, repr=False)


class ThrottledLog:
    def __init__(
        self,
        logger: logging.Logger,
        interval_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self._clock = clock
        self._runs: dict[Hashable, _Run] = {}

    def warning(self, key: Hashable, msg: str, *args: Any) -> None:
        self.log(logging.WARNING, key, msg, *args)

    def error(self, key: Hashable, msg: str, *args: Any, exc_info: bool = False) -> None:
        self.log(logging.ERROR, key, msg, *args, exc_info=exc_info)

    def log(self, level: int, key: Hashable, msg: str, *args: Any, exc_info: bool = False) -> None:
        now = self._clock()
        run = self._runs.get(key)
        if run is not None and now - run.since < self.interval_s:
            run.repeats += 1
            self._schedule_flush(key, run, now)
            return
        if run is not None:
            self._flush(key)
        self._prune(now)
        self.logger.log(level, msg, *args, exc_info=exc_info)
        self._runs[key] = _Run(since=now, level=level, msg=msg, args=args)

    def _schedule_flush(self, key: Hashable, run: _Run, now: float) -> None:
        if run.flush is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a sync caller): the next occurrence reports the count
            return
        run.flush = loop.call_later(run.since + self.interval_s - now, self._flush, key)

    def _flush(self, key: Hashable) -> None:
        run = self._runs.pop(key, None)
        if run is None:
            return
        if run.flush is not None:
            run.flush.cancel()
        if run.repeats:
            self.logger.log(
                run.level,
                run.msg + " (%d more like this in %g s)",  # %g: a 0.5 s interval is not "0 s"
                *run.args,
                run.repeats,
                self.interval_s,
            )

    def _prune(self, now: float) -> None:
        if len(self._runs) < MAX_KEYS:
            return
        for key in [k for k, r in self._runs.items() if now - r.since >= self.interval_s]:
            self._flush(key)
        while len(self._runs) >= MAX_KEYS:  # all still current: report the oldest early
            self._flush(next(iter(self._runs)))
