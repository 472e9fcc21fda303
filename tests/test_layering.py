"""The architecture, checked: dependencies point one way, the serving process stays lean, routes
get their collaborators in one place.

- ``service`` (the gateway and the pieces training shares) never imports ``patch_training``;
- importing and starting the gateway app loads neither PyTorch nor training code nor the
  upload parsers (pyarrow, Pillow), even while it validates an upload;
- no route module imports another, and only ``service.api.deps`` (plus the factory that fills
  it) touches ``app.state``.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.local.processes import ROOT

SERVICE = ROOT / "service"
HEAVY = ("torch", "patch_training", "pyarrow", "PIL", "matplotlib", "sklearn")


def imported_modules(path: Path) -> set[str]:
    """Every module an ``import`` / ``from ... import`` in the file names, at any depth."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_the_serving_package_never_imports_training_code() -> None:
    offenders = {}
    for path in SERVICE.rglob("*.py"):
        training = sorted(m for m in imported_modules(path) if m.split(".")[0] == "patch_training")
        if training:
            offenders[str(path.relative_to(ROOT))] = training
    assert offenders == {}
    assert "service.settings" in imported_modules(SERVICE / "api" / "app.py")  # the scan works


def test_no_route_module_imports_another() -> None:
    routes = sorted((SERVICE / "api").glob("routes_*.py"))
    assert routes, "route modules moved?"
    for path in routes:
        others = {f"service.api.{p.stem}" for p in routes if p != path}
        assert imported_modules(path).isdisjoint(others), path.name


def test_only_the_dependency_module_and_the_factory_read_app_state() -> None:
    allowed = {SERVICE / "api" / "deps.py", SERVICE / "api" / "app.py"}
    readers = [
        str(path.relative_to(ROOT))
        for path in SERVICE.rglob("*.py")
        if path not in allowed and "app.state" in path.read_text()
    ]
    assert readers == []


def test_every_job_spec_method_has_an_implementation() -> None:
    from patch_training.methods import METHODS
    from service.jobs.spec import METHODS as SPEC_METHODS

    assert set(METHODS) == set(SPEC_METHODS)
    assert all(METHODS[name].kind == name for name in METHODS)


# A gateway with one tabular model, started, taking one calibration upload through POST
# /patches (validated in the upload-checking process, stored, queued), then listing what
# the serving process has imported.
_SERVE_AN_UPLOAD = """
import asyncio, json, sys
import httpx
from service.api.app import create_app
from service.settings import GatewaySettings

settings = GatewaySettings.model_validate(json.loads(sys.argv[1]))

async def main():
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            rows = [f"{i},{i % 3},{i % 2},{'uv'[i % 4 // 2]}" for i in range(40)]
            csv = "\\n".join(["a,b,y,g", *rows])
            spec = {"model": "tab", "target": "y", "bias": ["g"]}
            r = await client.post(
                "/patches",
                headers={"Authorization": "Bearer admin-key"},
                data={"spec": json.dumps(spec)},
                files={"calibration": ("c.csv", csv.encode(), "text/csv")},
            )
    heavy = sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[2].split(",")))
    print(json.dumps({"status": r.status_code, "body": r.json(), "heavy": heavy}))

asyncio.run(main())
"""


@pytest.mark.slow
def test_the_gateway_process_loads_no_training_code_even_while_validating_an_upload(
    key_prefix: str, redis_client: object
) -> None:
    from service.settings import GatewaySettings
    from tests.conftest import REDIS_URL
    from tests.workers import remove_queue, with_own_queue

    settings = with_own_queue(
        GatewaySettings(
            _env_file=None,
            models=[
                {
                    "name": "tab",
                    "classes": ["0", "1"],
                    "input": {"shape": [2], "features": ["a", "b"]},
                    "upstream": {"url": "http://127.0.0.1:9/v2/models/tab/infer"},
                }
            ],
            redis={"url": REDIS_URL, "key_prefix": key_prefix},
            runtime={"use_gpu": False},
            predict_api_key="predict-key",
            admin_api_key="admin-key",
        )
    )
    config = settings.model_dump(mode="json")
    for secret in ("signing_key", "predict_api_key", "admin_api_key"):
        config[secret] = getattr(settings, secret).get_secret_value()
    try:
        done = subprocess.run(
            [sys.executable, "-c", _SERVE_AN_UPLOAD, json.dumps(config), ",".join(HEAVY)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
        )
    finally:
        remove_queue(settings)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout.splitlines()[-1])
    assert answer["status"] == 202, answer["body"]
    assert answer["body"]["rows"] == 40
    assert answer["heavy"] == []
