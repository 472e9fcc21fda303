"""The quality bench's system starts from an empty job queue: a crashed run's queued jobs must
not run before the next run's (their queue key lies outside the bench's Redis prefix)."""

from __future__ import annotations

import uuid

import pytest
import redis
from rq import Queue

from bench.quality.system import empty_queue
from tests.conftest import REDIS_URL


def test_empty_queue_drops_a_crashed_runs_waiting_jobs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ERASER_REDIS__URL", REDIS_URL)
    name = f"eraser-test-queue-{uuid.uuid4().hex[:8]}"
    with redis.Redis.from_url(REDIS_URL) as client:
        queue = Queue(name, connection=client)
        jobs = [queue.enqueue("builtins.print", i) for i in range(3)]
        assert queue.count == 3
        assert empty_queue(name) == 3
        assert queue.count == 0
        assert not any(client.exists(j.key) for j in jobs)
        assert empty_queue(name) == 0
