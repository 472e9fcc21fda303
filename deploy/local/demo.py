"""`make demo`: the whole product on this machine, as separate processes talking HTTP.

1. The stand-in black box (an MLP trained on COMPAS without race) serves OIP v2.
2. The gateway starts in front of it, with Redis as its registry.
3. A patch is distilled from the bundled calibration split (Eq. 17 targets from the black box's
   answers, queried through the gateway's own upstream adapter; an MLP fitted to them),
   registered over the operator API and activated.
4. The held-out test split goes through `/predict`; raw vs fair group metrics are printed.
"""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import orjson
import yaml

from blackbox.data import FEATURE_NAMES, CompasData, compas_split, load_compas
from blackbox.model import CLASSES
from deploy.local.processes import (
    CACHE,
    clear_redis_prefix,
    free_port,
    launched,
    standin_model_config,
)
from patch_training.export.mlp_onnx import fit_mlp_patch
from service.eraser_math import distillation_targets
from service.fairness_metrics import GroupReport, group_report
from service.settings import ModelConfig
from service.upstream.client import UpstreamClient

PREFIX = "eraser-demo"
KEYS = {"ERASER_PREDICT_API_KEY": "demo-predict-key", "ERASER_ADMIN_API_KEY": "demo-admin-key"}
PREDICT = {"Authorization": f"Bearer {KEYS['ERASER_PREDICT_API_KEY']}"}
ADMIN = {"Authorization": f"Bearer {KEYS['ERASER_ADMIN_API_KEY']}"}


def main() -> None:
    run_demo(PREFIX)


def run_demo(prefix: str) -> dict[str, GroupReport]:
    """The whole demo under Redis key ``prefix`` (owned: cleared first); raw and fair metrics."""
    data = load_compas()
    split = compas_split(data, seed=0)
    bb_port, gw_port = free_port(), free_port()
    model_path = CACHE / "models" / "compas_mlp.npz"
    bb_args = ["-m", "blackbox", "serve", "--port", str(bb_port), "--model-path", str(model_path)]
    bb_url = f"http://127.0.0.1:{bb_port}"
    gw_url = f"http://127.0.0.1:{gw_port}"
    model = standin_model_config(bb_url)
    config = CACHE / "demo" / "eraser.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(yaml.safe_dump({"models": [model]}))
    clear_redis_prefix(prefix)
    env = {**KEYS, "ERASER_CONFIG_FILE": str(config), "ERASER_REDIS__KEY_PREFIX": prefix}
    gw_args = ["-m", "service.cli", "serve", "--port", str(gw_port)]
    print(f"black box  {bb_url}  (stand-in COMPAS MLP, race not an input)")
    with (
        launched(bb_args, f"{bb_url}/v2/health/ready", "demo-blackbox"),
        launched(gw_args, f"{gw_url}/v2/health/ready", "demo-gateway", env=env),
        httpx.Client(base_url=gw_url, timeout=30) as gw,
    ):
        print(f"gateway    {gw_url}  (OpenAPI docs at {gw_url}/docs)")
        _install_patch(gw, ModelConfig.model_validate(model), data, split.calib)
        return _report(gw, data, split.test)


def _install_patch(
    gw: httpx.Client, model: ModelConfig, data: CompasData, calib: np.ndarray
) -> None:
    x, y, race = data.X[calib], data.y[calib], data.race[calib]
    log_m = asyncio.run(_query_black_box(model, x))
    print(f"calibration: {len(calib)} rows queried through the upstream adapter")
    blob = fit_mlp_patch(x, distillation_targets(log_m, y, race), hidden=(16,), seed=0)
    spec = {
        "kind": "eraser",
        "model": model.name,
        "classes": list(CLASSES),
        "input_shape": [len(FEATURE_NAMES)],
        "training_config": {"bias": "race", "demo": True},
    }
    r = gw.post(
        "/patches/race-demo/versions",
        headers=ADMIN,
        data={"manifest": orjson.dumps(spec).decode()},
        files={"artifact": ("race.onnx", blob, "application/octet-stream")},
    )
    r.raise_for_status()
    version = r.json()["version"]
    stack = gw.get(f"/models/{model.name}/stack", headers=ADMIN).json()["stack"]
    body = {
        "entries": [{"patch": "race-demo", "version": version, "alpha": 1.0}],
        "expected_revision": stack["revision"],
        "reason": "demo",
    }
    r = gw.put(f"/models/{model.name}/stack", headers=ADMIN, json=body)
    r.raise_for_status()
    revision = r.json()["stack"]["revision"]
    print(f"patch race-demo v{version} registered and active at stack revision {revision}")


async def _query_black_box(model: ModelConfig, x: np.ndarray) -> np.ndarray:
    async with UpstreamClient(model) as upstream:
        return await upstream.predict_many(x, batch_size=256, concurrency=4)


def _report(gw: httpx.Client, data: CompasData, test: np.ndarray) -> dict[str, GroupReport]:
    preds: list[dict] = []
    for chunk in np.array_split(test, int(np.ceil(len(test) / 500))):
        body = {"model": "compas", "instances": data.X[chunk].tolist(), "return_raw": True}
        r = gw.post("/predict", headers=PREDICT, json=body)
        r.raise_for_status()
        answer = r.json()
        preds += answer["predictions"]
    fair = np.array([CLASSES.index(p["label"]) for p in preds])
    raw = np.array([np.argmax([p["raw_probabilities"][c] for c in CLASSES]) for p in preds])
    y, race = data.y[test], data.race[test]
    print(
        f"\nheld-out test split: {len(test)} rows, revision {answer['revision']}, "
        f"patches {answer['patches']}"
    )
    reports = {"raw": group_report(y, raw, race), "fair": group_report(y, fair, race)}
    print(f"{'':14}{'accuracy':>10}{'avg-group':>11}{'worst-group':>13}{'EO bias':>9}")
    for name, key in (("raw upstream", "raw"), ("Eraser (fair)", "fair")):
        m = reports[key].as_percent()
        print(
            f"{name:14}{m['accuracy']:>10.2f}{m['avg_group_acc']:>11.2f}"
            f"{m['worst_group_acc']:>13.2f}{m['eo_bias']:>9.2f}"
        )
    print("(%; EO bias = paper Eq. 20, mean over classes of the accuracy gap between races)")
    return reports


if __name__ == "__main__":
    main()
