"""The queue worker as a process: a killed worker leaves no half-registered version."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from deploy.local.processes import descendants, kill_tree
from patch_training.jobs.context import JobContext
from service.calibration.dataset import CalibrationSet
from service.jobs.queue import enqueue_job, job_view, sync_redis, training_queue
from service.settings import GatewaySettings
from tests.patch_training.jobs.conftest import spec
from tests.workers import remove_queue, running_worker, with_own_queue

pytestmark = pytest.mark.slow  # end-to-end: real processes (`pytest -m "not slow"` skips)


def _wait_for_stage(connection: redis.Redis, job_id: str, stage: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        view = job_view(connection, job_id)
        if view.progress and view.progress["stage"] == stage:
            return
        time.sleep(0.1)
    raise TimeoutError(f"job {job_id} never reached {stage!r}")


@pytest.fixture
def queued_settings(settings: GatewaySettings) -> Iterator[GatewaySettings]:
    own = with_own_queue(settings)
    yield own
    remove_queue(own)


async def test_worker_killed_while_training_registers_nothing(
    ctx: JobContext,
    calibration: CalibrationSet,
    queued_settings: GatewaySettings,
    redis_client: aioredis.Redis,
    tmp_path: Path,
) -> None:
    settings = queued_settings
    endless = spec(
        name="race", epochs=1_000_000, patience=1_000_000, calibration_set_id=calibration.sha256
    )
    connection = sync_redis(settings)
    queue = training_queue(connection, settings.training)
    job_id = enqueue_job(queue, endless, settings.training)
    with running_worker(settings, tmp_path) as worker:
        _wait_for_stage(connection, job_id, "train", timeout_s=60)
        horses = descendants(worker.pid)
        assert horses, "the job runs in a forked work-horse"
        kill_tree(worker.pid, signal.SIGKILL)  # worker and work-horse, mid-training
        worker.wait(10)
    assert await ctx.registry.list_patches() == []
    assert await redis_client.keys(f"{settings.redis.key_prefix}:*race*") == []
    assert job_view(connection, job_id).result is None
    connection.close()


async def test_a_killed_work_horse_is_retried_and_registers_exactly_one_version(
    ctx: JobContext,
    calibration: CalibrationSet,
    queued_settings: GatewaySettings,
    tmp_path: Path,
) -> None:
    training = queued_settings.training.model_copy(update={"retries": 1, "retry_interval_s": 0})
    settings = queued_settings.model_copy(update={"training": training})
    job = spec(name="race", epochs=400, patience=400, calibration_set_id=calibration.sha256)
    connection = sync_redis(settings)
    job_id = enqueue_job(training_queue(connection, training), job, training)
    with running_worker(settings, tmp_path) as worker:
        _wait_for_stage(connection, job_id, "train", timeout_s=60)
        # The work-horse is the child that leads its own process group (RQ calls setpgrp in
        # it); the scheduler, also a child, stays in the worker's group.
        [horse] = [pid for pid in descendants(worker.pid) if os.getpgid(pid) == pid]
        os.kill(horse, signal.SIGKILL)  # the job's process dies; the worker lives on
        view = _wait_for_state(connection, job_id, "finished", timeout_s=120)
    assert view.retries_left == 0  # the second attempt did it
    assert [m.version for m in await ctx.registry.list_versions("race")] == [1]
    connection.close()


def _wait_for_state(connection: redis.Redis, job_id: str, state: str, timeout_s: float):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        view = job_view(connection, job_id)
        if view.state == state:
            return view
        if view.state == "failed":
            raise AssertionError(f"job failed: {view.error}")
        time.sleep(0.2)
    raise TimeoutError(f"job {job_id} not {state} after {timeout_s} s")
