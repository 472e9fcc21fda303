"""Deployment files: docker-compose, the Dockerfile's images and the Kubernetes manifests.

``config`` runs with the docker compose plugin or, without it, Debian's ``docker-compose``
(v1.29, which validates against the Compose Specification schema and needs no engine for
``config``; ``make test`` installs it with ``deploy/local/ensure-compose.sh``). Where neither is
available that one test skips and says so; the structural checks below still run.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest
import yaml

from deploy.grafana.dashboard import PATH as DASHBOARD
from tests.deploy.queries import ROOT

COMPOSE = ROOT / "docker-compose.yml"


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def compose_cli() -> list[str] | None:
    """``docker compose`` when the plugin works, else ``docker-compose``, else None."""
    if shutil.which("docker") is not None:
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    return ["docker-compose"] if shutil.which("docker-compose") else None


@pytest.mark.skipif(
    compose_cli() is None,
    reason="no Compose CLI here (neither the docker compose plugin nor docker-compose; "
    "deploy/local/ensure-compose.sh installs one as root); the structural checks below still ran",
)
def test_docker_compose_config_validates() -> None:
    done = subprocess.run(
        [*(compose_cli() or []), "-f", str(COMPOSE), "config", "--quiet"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr


def test_compose_runs_the_whole_product_with_pinned_images_and_healthchecks() -> None:
    services = compose()["services"]
    assert set(services) == {"redis", "standin", "gateway", "worker", "prometheus", "grafana"}
    for name, service in services.items():
        if "image" in service:
            assert re.fullmatch(r"[\w./-]+:[\w.-]+", service["image"]), name
            assert not service["image"].endswith(":latest"), name
            assert "healthcheck" in service, name
        else:  # our images: their HEALTHCHECK is in the Dockerfile
            assert service["build"]["target"] in {"gateway", "worker", "standin"}, name
    assert "--appendonly" in services["redis"]["command"]
    assert services["worker"]["environment"] == services["gateway"]["environment"]


def test_every_file_compose_mounts_exists_where_its_service_reads_it() -> None:
    services = compose()["services"]
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name}: {source}"
    prometheus = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    assert prometheus["scrape_configs"][0]["static_configs"][0]["targets"] == ["gateway:8000"]
    assert prometheus["rule_files"] == ["/etc/prometheus/rules/*.rules.yml"]
    assert "./deploy/prometheus/rules:/etc/prometheus/rules:ro" in services["prometheus"]["volumes"]
    provider = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/dashboards/eraser.yml").read_text()
    )["providers"][0]
    dashboards = f"./{DASHBOARD.parent.relative_to(ROOT)}:{provider['options']['path']}:ro"
    assert dashboards in services["grafana"]["volumes"]


def dockerfile_stages() -> dict[str, str]:
    text = (ROOT / "Dockerfile").read_text()
    parts = re.split(r"^FROM ", text, flags=re.MULTILINE)[1:]
    return {part.split()[2] if " AS " in part.split("\n")[0] else "": part for part in parts}


def test_images_run_as_a_non_root_user_and_only_the_worker_has_pytorch_and_training() -> None:
    stages = dockerfile_stages()
    assert re.match(r"python:\d+\.\d+\.\d+-slim-\w+ AS base", stages["base"])
    for target in ("gateway", "worker", "standin"):
        assert "\nUSER eraser\n" in stages[target], target
        assert "HEALTHCHECK" in stages[target] or target == "standin", target
    assert "torch" not in stages["gateway"] and "torch" not in stages["base"]
    assert "torch==2.13.0" in stages["worker"] and "TORCH_INDEX_URL" in stages["worker"]
    assert "patch_training" not in stages["base"] + stages["gateway"]
    assert "COPY patch_training" in stages["worker"]
    assert '["eraser-gateway", "serve"' in stages["gateway"]


def test_the_gateway_starts_without_pytorch_installed() -> None:
    code = (
        "import sys; sys.modules['torch'] = None\n"  # any `import torch` now fails
        "from service.api.app import create_app; from service.settings import GatewaySettings\n"
        "create_app(GatewaySettings(_env_file=None))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr


def manifests(name: str) -> list[dict]:
    return list(yaml.safe_load_all((ROOT / "deploy/k8s" / name).read_text()))


def test_kubernetes_gateway_has_probes_on_real_routes_a_service_and_an_autoscaler() -> None:
    from service.api.app import create_app
    from service.settings import GatewaySettings

    routes = set(create_app(GatewaySettings(_env_file=None)).openapi()["paths"])
    docs = {d["kind"]: d for d in manifests("gateway.yaml")}
    assert set(docs) == {"Deployment", "Service", "HorizontalPodAutoscaler"}
    container = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["path"] in routes, probe
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert docs["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"] == "eraser-gateway"
    labels = docs["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert docs["Service"]["spec"]["selector"].items() <= labels.items()


def test_kubernetes_worker_runs_eraser_worker_as_non_root() -> None:
    (worker,) = manifests("worker.yaml")
    spec = worker["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["containers"][0]["args"] == ["eraser", "worker"]
