"""Local process orchestration for the demo and benchmarks: the stand-in and the gateway run as
separate processes that talk HTTP, exactly as deployed."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

from blackbox.data import FEATURE_NAMES
from blackbox.model import CLASSES

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clear_redis_prefix(prefix: str) -> int:
    """Delete every ``{prefix}:*`` key so a run that owns its prefix starts from revision 0;
    returns how many keys went. The URL comes from ERASER_REDIS__URL, as the gateway reads it."""
    import redis

    url = os.environ.get("ERASER_REDIS__URL", "redis://127.0.0.1:6379/0")
    with redis.Redis.from_url(url) as client:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=500))
        return client.delete(*keys) if keys else 0


def standin_model_config(
    upstream_base: str, name: str = "compas", features: Sequence[str] = FEATURE_NAMES
) -> dict:
    """Gateway model entry for the stand-in COMPAS black box (OIP v2, logits output)."""
    return {
        "name": name,
        "classes": list(CLASSES),
        "input": {"shape": [len(features)], "features": list(features)},
        "upstream": {
            "url": f"{upstream_base}/v2/models/{name}/infer",
            "protocol": "v2",
            "input_name": "x",
            "output_name": "logits",
            "output_kind": "logits",
        },
    }


@contextmanager
def launched(
    args: list[str],
    ready: str | Callable[[], bool],
    log_name: str,
    env: Mapping[str, str] | None = None,
    timeout_s: float = 60.0,
    cwd: Path = ROOT,
) -> Iterator[subprocess.Popen]:
    """Start ``python -m ...`` args in ``cwd`` (whose packages ``-m`` imports first), wait until
    ``ready`` (a URL answering 200, or a check returning True), stop it afterwards."""
    log_path = CACHE / "logs" / f"{log_name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, *args],
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,  # its own process group: children (RQ work-horses) too
        )
        try:
            _wait_ready(proc, _as_check(ready), timeout_s, log_path)
            yield proc
        finally:
            _stop_group(proc)


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the process group, SIGKILL what is left after 10 s — children that left the
    group included (an RQ work-horse calls setpgrp, and would train on as an orphan)."""
    for sig, wait_s in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        if kill_tree(proc.pid, sig) == 0:
            return
        try:
            proc.wait(wait_s)
        except subprocess.TimeoutExpired:
            continue
        if sig == signal.SIGTERM:
            kill_tree(proc.pid, signal.SIGKILL)  # the leader is gone; no orphan may stay
        return


def kill_tree(pid: int, sig: int) -> int:
    """Signal ``pid``'s process group and every descendant; how many were signalled."""
    targets = [pid, *descendants(pid)]
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)
    sent = 0
    for target in targets:
        with contextlib.suppress(ProcessLookupError):
            os.kill(target, sig)
            sent += 1
    return sent


def descendants(pid: int) -> list[int]:
    """Children, grandchildren, ... of ``pid``, from /proc (Linux)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, frontier = [], [pid]
    while frontier:
        children = parents.get(frontier.pop(), [])
        found += children
        frontier += children
    return found


def _as_check(ready: str | Callable[[], bool]) -> Callable[[], bool]:
    if callable(ready):
        return ready

    def answers() -> bool:
        try:
            return httpx.get(ready, timeout=1.0).status_code == 200
        except httpx.TransportError:
            return False

    return answers


def _wait_ready(
    proc: subprocess.Popen, ready: Callable[[], bool], timeout_s: float, log_path: Path
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}; see {log_path}")
        if ready():
            return
        time.sleep(0.1)
    raise TimeoutError(f"not ready after {timeout_s} s; see {log_path}")


def worker_listening(queue: str) -> Callable[[], bool]:
    """Readiness of ``eraser worker``: it has registered itself on ``queue`` in Redis."""
    import redis
    from rq import Queue, Worker

    url = os.environ.get("ERASER_REDIS__URL", "redis://127.0.0.1:6379/0")

    def check() -> bool:
        with redis.Redis.from_url(url) as client:
            return Worker.count(queue=Queue(queue, connection=client)) > 0

    return check
