"""The running product the quality benchmark measures: three processes talking HTTP.

- the black box (``python -m blackbox serve-dir``) serving every deployed model of the run;
- the gateway, one model entry per (deployed model, calibration set), under the bench's own
  Redis key prefix (cleared before and after);
- two training workers (``eraser worker``) on the bench's own queue.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

from deploy.local.processes import (
    CACHE,
    clear_redis_prefix,
    free_port,
    launched,
    worker_listening,
)

# Its own Redis key prefix and queue; ``ERASER_BENCH_QUALITY_PREFIX`` gives a second run (in
# another checkout) its own, so two runs on one Redis never take each other's jobs.
PREFIX = os.environ.get("ERASER_BENCH_QUALITY_PREFIX", "eraser-bench-quality")
QUEUE = f"{PREFIX}-training"
KEYS = {
    "ERASER_PREDICT_API_KEY": "quality-predict-key",
    "ERASER_ADMIN_API_KEY": "quality-admin-key",
}
RUN_DIR = CACHE / "bench-quality"
# Two training workers (one PyTorch thread each, the product's default): jobs are independent,
# and on two cores two single-threaded workers beat one worker with two threads.
WORKER = ["-m", "patch_training.cli", "worker"]


@dataclass(frozen=True)
class GatewayModel:
    """One gateway model entry: ``name`` callers use, ``upstream`` the black box's model name."""

    name: str
    upstream: str
    classes: list[str]
    input_shape: tuple[int, ...]
    feature_names: list[str] | None


@dataclass(frozen=True)
class System:
    gateway_url: str
    blackbox_url: str


def model_entry(model: GatewayModel, blackbox_url: str) -> dict:
    """The gateway config of one model; a generous read timeout because the worker trains on
    the same two cores while the benchmark sends batches of images."""
    entry: dict = {
        "name": model.name,
        "classes": model.classes,
        "input": {"shape": list(model.input_shape)},
        "upstream": {
            "url": f"{blackbox_url}/v2/models/{model.upstream}/infer",
            "protocol": "v2",
            "input_name": "x",
            "output_name": "logits",
            "output_kind": "logits",
            "read_timeout_s": 120.0,
        },
    }
    if model.feature_names is not None:
        entry["input"]["features"] = model.feature_names
    return entry


@contextmanager
def running_system(models: Sequence[GatewayModel], model_dir: Path) -> Iterator[System]:
    """Start black box, gateway and worker; stop them and clear the bench's Redis keys after."""
    bb_port, gw_port = free_port(), free_port()
    bb_url, gw_url = f"http://127.0.0.1:{bb_port}", f"http://127.0.0.1:{gw_port}"
    config = RUN_DIR / "eraser.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(yaml.safe_dump({"models": [model_entry(m, bb_url) for m in models]}))
    env = {
        **KEYS,
        "ERASER_CONFIG_FILE": str(config),
        "ERASER_REDIS__KEY_PREFIX": PREFIX,
        "ERASER_TRAINING__QUEUE": QUEUE,
    }
    bb_args = [
        "-m",
        "blackbox",
        "serve-dir",
        "--models-dir",
        str(model_dir),
        "--port",
        str(bb_port),
    ]
    gw_args = ["-m", "service.cli", "serve", "--port", str(gw_port)]
    clear_redis_prefix(PREFIX)
    empty_queue(QUEUE)  # a crashed run's queued jobs would otherwise run before this run's
    try:
        with (
            launched(bb_args, f"{bb_url}/v2/health/ready", "quality-blackbox"),
            launched(gw_args, f"{gw_url}/v2/health/ready", "quality-gateway", env=env),
            launched(WORKER, worker_listening(QUEUE), "quality-worker-1", env=env, timeout_s=120),
            launched(WORKER, worker_listening(QUEUE), "quality-worker-2", env=env, timeout_s=120),
        ):
            yield System(gateway_url=gw_url, blackbox_url=bb_url)
    finally:
        clear_redis_prefix(PREFIX)
        empty_queue(QUEUE)


def empty_queue(name: str) -> int:
    """Drop every job waiting on the RQ queue ``name`` (its key lies outside the bench's
    prefix, so ``clear_redis_prefix`` misses it); returns how many went."""
    import redis
    from rq import Queue

    url = os.environ.get("ERASER_REDIS__URL", "redis://127.0.0.1:6379/0")
    with redis.Redis.from_url(url) as client:
        return int(Queue(name, connection=client).empty())
