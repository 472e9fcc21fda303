"""Progress of a training job: a tqdm bar per stage, mirrored to whoever asks (the RQ job).

Operators watch a worker's log or a terminal (tqdm) and API clients poll ``GET /jobs/{id}``
(the callback writes the job's meta); both read from the same counters.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from tqdm import tqdm

Snapshot = dict[str, Any]


class JobProgress:
    """Stages run one after another; ``publish`` receives a snapshot at most every
    ``min_interval_s`` (plus at each stage's start and end), so Redis sees a few writes a second
    at most however fast a stage counts."""

    def __init__(
        self,
        publish: Callable[[Snapshot], None] | None = None,
        show_bars: bool = True,
        min_interval_s: float = 0.5,
    ) -> None:
        self._publish, self._show, self._interval = publish, show_bars, min_interval_s
        self._last = 0.0
        self.stages: list[str] = []

    @contextmanager
    def stage(self, name: str, total: int, unit: str = "it") -> Iterator[Callable[[int], None]]:
        """Yield ``advance(n)``; the stage is complete when the block exits normally."""
        self.stages.append(name)
        done = 0
        bar = tqdm(total=total, desc=name, unit=unit, disable=not self._show, leave=False)

        def advance(n: int = 1) -> None:
            nonlocal done
            done += n
            bar.update(n)
            self._emit(name, done, total, force=False)

        self._emit(name, 0, total, force=True)
        try:
            yield advance
        finally:
            bar.close()
        self._emit(name, total, total, force=True)

    def _emit(self, stage: str, done: int, total: int, force: bool) -> None:
        now = time.monotonic()
        if self._publish is None or (not force and now - self._last < self._interval):
            return
        self._last = now
        fraction = min(done / total, 1.0) if total else 1.0
        self._publish({"stage": stage, "done": done, "total": total, "fraction": fraction})
