"""Local process orchestration for the demo and benchmarks: the stand-in and the gateway run as
separate processes that talk HTTP, exactly as deployed."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
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


def standin_model_config(upstream_base: str, name: str = "compas") -> dict:
    """Gateway model entry for the stand-in COMPAS black box (OIP v2, logits output)."""
    return {
        "name": name,
        "classes": list(CLASSES),
        "input": {"shape": [len(FEATURE_NAMES)], "features": list(FEATURE_NAMES)},
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
    ready_url: str,
    log_name: str,
    env: Mapping[str, str] | None = None,
    timeout_s: float = 60.0,
) -> Iterator[subprocess.Popen]:
    """Start ``python -m ...`` args, wait until ``ready_url`` answers 200, stop it afterwards."""
    log_path = CACHE / "logs" / f"{log_name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, *args],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        try:
            _wait_ready(proc, ready_url, timeout_s, log_path)
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def _wait_ready(proc: subprocess.Popen, url: str, timeout_s: float, log_path: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}; see {log_path}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} not ready after {timeout_s} s; see {log_path}")
