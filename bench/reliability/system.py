"""The system under test as separate processes on free loopback ports, and the faults' knobs.

Redis is a dedicated ``redis-server`` (never the shared one) with ``appendfsync always`` in a
temporary directory: a SIGKILL then loses no acknowledged write, so "restart with its data" is
exactly the append-only file, and "restart empty" is the same server after the directory went.
The stand-in is started through ``launched`` like every other process, but by hand-entered
context so that a scenario can kill it and start it again on the same port.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis
import yaml

from bench.common import MODEL
from deploy.local.processes import CACHE, free_port, kill_tree, launched, standin_model_config

STANDIN_MODEL = CACHE / "models" / "compas_mlp.npz"
POLL_INTERVAL_S = 0.5  # replicas poll the registry this often (pub/sub is the fast path)


@dataclass(frozen=True)
class Credentials:
    """Fresh per run: the three secrets differ, so a route taking the wrong key shows up."""

    predict: str = field(default_factory=lambda: "rel-predict-" + secrets.token_hex(8))
    admin: str = field(default_factory=lambda: "rel-admin-" + secrets.token_hex(8))
    signing: str = field(default_factory=lambda: "rel-signing-" + secrets.token_hex(16))

    @property
    def predict_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.predict}"}

    @property
    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin}"}


class RedisServer:
    """A ``redis-server`` of our own whose process and data directory we may abuse."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.data = workdir / "redis-data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.log = CACHE / "logs" / "reliability-redis.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 20.0) -> float:
        """Start on the same port and directory; returns when it answers PING (monotonic)."""
        self.data.mkdir(parents=True, exist_ok=True)
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.data), "--appendonly", "yes", "--appendfsync", "always",
                "--save", "", "--protected-mode", "no"]  # fmt: skip
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        return wait_until(self.answers, timeout_s, f"redis on port {self.port}", self.proc)

    def answers(self) -> bool:
        try:
            with redis.Redis.from_url(self.url, socket_timeout=0.5) as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    def client(self) -> redis.Redis:
        """A synchronous client (bytes), for the scenarios that write Redis as an attacker."""
        return redis.Redis.from_url(self.url, socket_timeout=5)

    def signal(self, sig: int) -> None:
        if self.proc is not None:
            os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final fsync (``appendfsync always`` already did it)."""
        if self.proc is not None:
            self.signal(signal.SIGKILL)
            self.proc.wait(10)
            self.proc = None

    def wipe(self) -> None:
        """Its data directory gone: the next ``start`` is an empty Redis."""
        shutil.rmtree(self.data, ignore_errors=True)

    def stop(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGCONT)  # a stopped server cannot die of TERM
            kill_tree(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
            self.proc = None


def wait_until(
    check: Callable[[], bool],
    timeout_s: float,
    what: str,
    proc: subprocess.Popen | None = None,
    poll_s: float = 0.02,
) -> float:
    """Poll ``check`` until it holds; the monotonic time it first did."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: exited with {proc.returncode}")
        if check():
            return time.monotonic()
        time.sleep(poll_s)
    raise TimeoutError(f"{what}: not ready after {timeout_s} s")


class Managed:
    """A ``launched`` process whose ``with`` is entered and left by hand (kill, start again)."""

    def __init__(self, factory: Callable[[], AbstractContextManager[subprocess.Popen]]) -> None:
        self._factory = factory
        self._cm: AbstractContextManager[subprocess.Popen] | None = None
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self._cm = self._factory()
        self.proc = self._cm.__enter__()

    def kill(self) -> None:
        """SIGKILL the process group (a crash, not a shutdown), then leave the ``with``."""
        if self.proc is not None:
            kill_tree(self.proc.pid, signal.SIGKILL)
        self.stop()

    def stop(self) -> None:
        if self._cm is not None:
            self._cm.__exit__(None, None, None)
        self._cm, self.proc = None, None


@dataclass
class System:
    """Every process of one run and how to reach it."""

    workdir: Path
    creds: Credentials
    redis: RedisServer
    prefix: str
    queue: str
    config: Path
    standin_url: str
    standin: Managed
    gateways: list[str] = field(default_factory=list)
    gateway_pids: list[int] = field(default_factory=list)
    worker: Managed | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        """What a gateway or a worker of this system reads."""
        return {
            "ERASER_CONFIG_FILE": str(self.config),
            "ERASER_REDIS__URL": self.redis.url,
            "ERASER_REDIS__KEY_PREFIX": self.prefix,
            "ERASER_SIGNING_KEY": self.creds.signing,
            "ERASER_PREDICT_API_KEY": self.creds.predict,
            "ERASER_ADMIN_API_KEY": self.creds.admin,
            "ERASER_RUNTIME__POLL_INTERVAL_S": str(POLL_INTERVAL_S),
            "ERASER_RUNTIME__USE_GPU": "false",
            "ERASER_TRAINING__QUEUE": self.queue,
            "ERASER_TRAINING__RETRIES": "0",
        }

    def admin(self, replica: int = 0, timeout: float = 30.0) -> httpx.Client:
        return httpx.Client(
            base_url=self.gateways[replica], headers=self.creds.admin_headers, timeout=timeout
        )

    def ensure_worker(self) -> None:
        """The training worker starts only for the scenario that needs it (PyTorch is slow to
        import, and the worker is a third CPU-hungry process on two cores)."""
        if self.worker is not None:
            return
        args = ["-m", "patch_training.cli", "worker"]
        ready = worker_listening(self.redis.url, self.queue)

        def factory() -> AbstractContextManager[subprocess.Popen]:
            return launched(args, ready, "reliability-worker", env=self.env(), timeout_s=120)

        self.worker = Managed(factory)
        self.worker.start()


def worker_listening(url: str, queue: str) -> Callable[[], bool]:
    """``deploy.local.processes.worker_listening`` for a Redis other than ERASER_REDIS__URL."""
    from rq import Queue, Worker

    def check() -> bool:
        with redis.Redis.from_url(url) as client:
            return Worker.count(queue=Queue(queue, connection=client)) > 0

    return check


def standin_factory(port: int) -> Callable[[], AbstractContextManager[subprocess.Popen]]:
    """The stand-in on a fixed port, so that the gateways find it again after a restart."""
    args = ["-m", "blackbox", "serve", "--port", str(port), "--model-path", str(STANDIN_MODEL)]
    ready = f"http://127.0.0.1:{port}/v2/health/ready"

    def factory() -> AbstractContextManager[subprocess.Popen]:
        # The first run trains the stand-in's model (scikit-learn) before it serves.
        return launched(args, ready, "reliability-blackbox", timeout_s=180)

    return factory


@contextmanager
def running_system(replicas: int = 3) -> Iterator[System]:
    """Redis, the stand-in and ``replicas`` gateways, all stopped (and the temporary directory
    removed) however the ``with`` ends."""
    workdir = Path(tempfile.mkdtemp(prefix="eraser-reliability-"))
    token = secrets.token_hex(4)
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, workdir, True)
        server = RedisServer(workdir)
        stack.callback(server.stop)
        server.start()
        port = free_port()
        standin_url = f"http://127.0.0.1:{port}"
        config = workdir / "eraser.yaml"
        config.write_text(yaml.safe_dump({"models": [standin_model_config(standin_url, MODEL)]}))
        system = System(
            workdir=workdir,
            creds=Credentials(),
            redis=server,
            prefix=f"eraser-rel-{token}",
            queue=f"eraser-rel-{token}-training",
            config=config,
            standin_url=standin_url,
            standin=Managed(standin_factory(port)),
        )
        system.standin.start()
        stack.callback(system.standin.stop)
        for i in range(replicas):
            url, proc = _start_gateway(stack, system, i)
            system.gateways.append(url)
            system.gateway_pids.append(proc.pid)
        stack.callback(lambda: system.worker.stop() if system.worker else None)
        yield system


def _start_gateway(stack: ExitStack, system: System, index: int) -> tuple[str, subprocess.Popen]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = ["-m", "service.cli", "serve", "--port", str(port)]
    cm = launched(args, f"{url}/v2/health/ready", f"reliability-gateway-{index}", env=system.env())
    return url, stack.enter_context(cm)
