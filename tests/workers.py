"""An ``eraser worker`` process configured like a test's gateway (same models, prefix, key)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

from deploy.local.processes import launched, worker_listening
from service.settings import GatewaySettings


def with_own_queue(settings: GatewaySettings) -> GatewaySettings:
    """A queue name no other test (or demo) listens on."""
    queue = f"eraser-test-{uuid.uuid4().hex[:8]}"
    return settings.model_copy(
        update={"training": settings.training.model_copy(update={"queue": queue})}
    )


@contextmanager
def running_worker(
    settings: GatewaySettings, tmp_path: Path, burst: bool = False
) -> Iterator[object]:
    """Start the worker as its own process; it reads the same settings through env + YAML."""
    config = tmp_path / "worker.yaml"
    models = [m.model_dump(mode="json") for m in settings.models]
    config.write_text(yaml.safe_dump({"models": models}))
    env = {
        "ERASER_CONFIG_FILE": str(config),
        "ERASER_REDIS__URL": settings.redis.url,
        "ERASER_REDIS__KEY_PREFIX": settings.redis.key_prefix,
        "ERASER_SIGNING_KEY": settings.signing_key.get_secret_value(),
        "ERASER_TRAINING__QUEUE": settings.training.queue,
        "ERASER_TRAINING__RETRIES": str(settings.training.retries),
    }
    args = ["-m", "patch_training.cli", "worker", *(["--burst"] if burst else [])]
    ready = worker_listening(settings.training.queue)
    with launched(args, ready, f"test-worker-{settings.training.queue}", env=env) as proc:
        yield proc


def remove_queue(settings: GatewaySettings) -> None:
    """Delete a test queue, its registries and every job it saw (tests clean up after
    themselves; RQ keys live outside the test's registry prefix)."""
    from rq import Queue, Worker
    from rq.serializers import JSONSerializer

    from service.jobs.queue import sync_redis

    with sync_redis(settings) as connection:
        queue = Queue(settings.training.queue, connection=connection, serializer=JSONSerializer)
        registries = (
            queue.started_job_registry,
            queue.finished_job_registry,
            queue.failed_job_registry,
            queue.scheduled_job_registry,
            queue.deferred_job_registry,
            queue.canceled_job_registry,
        )
        job_ids = set(queue.get_job_ids())
        for registry in registries:
            job_ids.update(registry.get_job_ids(cleanup=False))
        patterns = [f"rq:*{job_id}*" for job_id in job_ids]
        patterns.append(f"rq:*{settings.training.queue}*")
        for worker in Worker.all(queue=queue):  # killed workers leave their records behind
            patterns.append(f"rq:worker:{worker.name}*")
            connection.srem("rq:workers", worker.key)
        connection.srem("rq:queues", queue.key)
        for pattern in patterns:
            stale = list(connection.scan_iter(match=pattern))
            if stale:
                connection.delete(*stale)
