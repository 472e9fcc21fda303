"""The processes a benchmark measures, each on a free port for the length of a ``with``.

Every target is a separate process talking HTTP, exactly as deployed: the stand-in black box,
the gateway (registry under the bench's own Redis prefix) and the bare passthrough baseline.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import yaml

from bench.common import (
    ADMIN_HEADERS,
    KEYS,
    MODEL,
    PREDICT_HEADERS,
    PREFIX,
    V2_INFER,
    class_names,
)
from bench.loadgen import GRPC_SCHEME
from deploy.local.processes import CACHE, ROOT, free_port, launched, standin_model_config


@dataclass(frozen=True)
class Server:
    """A running target: where to send load, and which process to charge its CPU time to;
    ``grpc``: its OIP v2 gRPC address as a ``grpc://`` URL, when it serves one."""

    url: str
    pid: int
    grpc: str | None = None


@contextmanager
def standin(delay_ms: float) -> Iterator[Server]:
    """The stand-in black box, sleeping ``delay_ms`` per request; yields its base URL."""
    port = free_port()
    model_path = CACHE / "models" / "compas_mlp.npz"
    args = ["-m", "blackbox", "serve", "--port", str(port), "--model-path", str(model_path)]
    args += ["--delay-ms", str(delay_ms)]
    url = f"http://127.0.0.1:{port}"
    with launched(args, f"{url}/v2/health/ready", f"bench-blackbox-{delay_ms:g}ms") as proc:
        yield Server(url, proc.pid)


@contextmanager
def standin_dir(models_dir: Path, grpc: bool = False) -> Iterator[Server]:
    """The stand-in serving the ONNX models of ``models_dir`` (``serve-dir``), and with
    ``grpc`` its gRPC endpoint too."""
    port = free_port()
    args = ["-m", "blackbox", "serve-dir", "--models-dir", str(models_dir), "--port", str(port)]
    grpc_args, grpc_url = _grpc_port(grpc)
    args += grpc_args
    url = f"http://127.0.0.1:{port}"
    with launched(args, f"{url}/v2/health/ready", f"bench-blackbox-{models_dir.name}") as proc:
        yield Server(url, proc.pid, grpc_url)


def _grpc_port(wanted: bool) -> tuple[list[str], str | None]:
    """``--grpc-port`` on a free port and the URL a client dials, when gRPC is ``wanted``."""
    if not wanted:
        return [], None
    port = free_port()
    return ["--grpc-port", str(port)], grpc_url_of(port)


@contextmanager
def gateway(
    upstream: str,
    label: str,
    tree: Path = ROOT,
    prefix: str = PREFIX,
    models: list[dict] | None = None,
    workers: int = 1,
    grpc: bool = False,
    **env_extra: str,
) -> Iterator[Server]:
    """A gateway process in front of ``upstream``, registry under the bench's own prefix
    (``env_extra``: more ``ERASER_*`` settings, e.g. batching off); ``tree``: a checkout whose
    code it runs (``bench.ab`` compares two); ``models``: its model entries (default: the
    stand-in's COMPAS model); ``workers``: ``eraser serve --workers``; ``grpc``: also serve
    gRPC (``--grpc-port``)."""
    config = CACHE / "bench" / f"eraser-{label}.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    entries = models if models is not None else [standin_model_config(upstream, MODEL)]
    config.write_text(yaml.safe_dump({"models": entries}))
    env = {**KEYS, "ERASER_CONFIG_FILE": str(config), "ERASER_REDIS__KEY_PREFIX": prefix}
    env |= env_extra
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = ["-m", "service.cli", "serve", "--port", str(port)]
    if workers != 1:  # only then: ``bench.ab`` may run a revision older than the option
        args += ["--workers", str(workers)]
    grpc_args, grpc_url = _grpc_port(grpc)
    args += grpc_args
    ready = f"{url}/v2/health/ready"
    with launched(args, ready, f"bench-gateway-{label}", env=env, cwd=tree) as proc:
        yield Server(url, proc.pid, grpc_url)


def grpc_url_of(port: int) -> str:
    return f"{GRPC_SCHEME}127.0.0.1:{port}"


@contextmanager
def passthrough(upstream: str) -> Iterator[Server]:
    """``bench.passthrough`` on ``upstream``: the gateway's server stack doing nothing else."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = ["-m", "bench.passthrough", "--port", str(port), "--upstream", upstream + V2_INFER]
    with launched(args, f"{url}/health", "bench-passthrough") as proc:
        yield Server(url, proc.pid)


def activate_patch(
    gw_url: str,
    name: str,
    blob: bytes,
    probe: bytes,
    model: str = MODEL,
    classes: list[str] | None = None,
    input_shape: list[int] | None = None,
) -> None:
    """Register ``blob`` over the operator API, make it ``model``'s whole stack, and wait
    until a request through the v2 route comes back debiased by it (activation is
    asynchronous). Defaults: the stand-in's COMPAS model."""
    spec = {"kind": "custom", "model": model, "classes": classes or class_names(),
            "input_shape": input_shape or [7], "training_config": {"bench": True}}  # fmt: skip
    with httpx.Client(base_url=gw_url, headers=ADMIN_HEADERS, timeout=120) as gw:
        r = gw.post(
            f"/patches/{name}/versions",
            data={"manifest": orjson.dumps(spec).decode()},
            files={"artifact": (f"{name}.onnx", blob, "application/octet-stream")},
        )
        r.raise_for_status()
        revision = gw.get(f"/models/{model}/stack").json()["stack"]["revision"]
        entry = {"patch": name, "version": r.json()["version"], "alpha": 1.0}
        body = {"entries": [entry], "expected_revision": revision, "reason": "bench"}
        gw.put(f"/models/{model}/stack", json=body).raise_for_status()
    wait_debiased(gw_url, name, probe, model)


def wait_debiased(
    gw_url: str,
    name: str,
    probe: bytes,
    model: str = MODEL,
    timeout_s: float = 60.0,
    in_a_row: int = 1,
) -> None:
    """Until ``in_a_row`` answers in a row come back debiased by ``name`` alone (several, to
    reach every worker of a multi-process gateway: each new connection may land on any)."""
    deadline, seen = time.monotonic() + timeout_s, 0
    url = f"{gw_url}/v2/models/{model}/infer"
    while time.monotonic() < deadline:
        r = httpx.post(url, content=probe, headers=PREDICT_HEADERS, timeout=30)
        params = r.json().get("parameters", {}) if r.status_code == 200 else {}
        if params.get("debiased") and [p["name"] for p in params["patches"]] == [name]:
            seen += 1
            if seen >= in_a_row:
                return
            continue
        seen = 0
        time.sleep(0.2)
    raise TimeoutError(f"gateway {gw_url} did not start serving patch {name} for {model}")
