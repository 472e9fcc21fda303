"""A real Prometheus server for tests: Debian's package (installed by
``deploy/prometheus/ensure-prometheus.sh`` when missing), run on a free loopback port with the
repository's rule files, scraping a test gateway every second."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import yaml

from tests.servers import bound_socket

ROOT = Path(__file__).resolve().parents[1]
RULE_FILES = sorted((ROOT / "deploy" / "prometheus" / "rules").glob("*.rules.yml"))
ENSURE = ROOT / "deploy" / "prometheus" / "ensure-prometheus.sh"


def prometheus_binary() -> str:
    """The ``prometheus`` binary, installed if missing; raises RuntimeError saying why not."""
    found = shutil.which("prometheus")
    if found:
        return found
    done = subprocess.run(["bash", str(ENSURE)], capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip() or "ensure-prometheus.sh failed")
    return done.stdout.strip().splitlines()[-1]


@contextmanager
def running_prometheus(binary: str, target_url: str, workdir: Path) -> Iterator[str]:
    """Prometheus scraping ``target_url``/metrics and evaluating the rules every second."""
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(p) for p in RULE_FILES],
        "scrape_configs": [
            {
                "job_name": "eraser-gateway",
                "static_configs": [{"targets": [urlsplit(target_url).netloc]}],
            }
        ],
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    with bound_socket() as sock:  # a free port; Prometheus binds it itself right after
        port = sock.getsockname()[1]
    log = (workdir / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(proc, url, workdir / "prometheus.log")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _wait_ready(proc: subprocess.Popen, url: str, log: Path, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prometheus exited with {proc.returncode}: {log.read_text()}")
        try:
            if httpx.get(f"{url}/-/ready", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"prometheus not ready after {timeout_s} s: {log.read_text()}")
