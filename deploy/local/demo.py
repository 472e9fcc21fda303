"""`make demo`: the whole product on this machine, as separate processes talking HTTP.

1. The stand-in black box (an MLP trained on COMPAS with race as one of its inputs, as in the
   Eraser paper) serves OIP v2.
2. The gateway starts in front of it, with Redis as its registry.
3. A training worker (`eraser worker`) listens on the job queue.
4. The bundled calibration split is uploaded to `POST /patches` as a CSV; the worker queries the
   black box through the gateway's own upstream adapter, distils the Eraser patch on the tuning
   rows, tunes α there, exports it, judges the exported patch on verdict rows that decided
   nothing else, registers it, and activates it if the gate's intervals clear its thresholds.
5. The test split (never seen by the black box or the patch) goes through `/predict`; raw vs
   fair group metrics are printed.
"""

from __future__ import annotations

import httpx
import numpy as np
import orjson
import yaml

from blackbox.data import (
    BIAS,
    TARGET,
    CompasData,
    compas_calibration_csv,
    compas_split,
    load_compas,
    with_race_feature,
)
from blackbox.model import CLASSES
from deploy.local.jobs import wait_for_job, wait_until_served
from deploy.local.processes import (
    CACHE,
    clear_redis_prefix,
    free_port,
    launched,
    standin_model_config,
    worker_listening,
)
from patch_training.metrics import GroupReport, group_report

PREFIX = "eraser-demo"
KEYS = {"ERASER_PREDICT_API_KEY": "demo-predict-key", "ERASER_ADMIN_API_KEY": "demo-admin-key"}
PREDICT = {"Authorization": f"Bearer {KEYS['ERASER_PREDICT_API_KEY']}"}
ADMIN = {"Authorization": f"Bearer {KEYS['ERASER_ADMIN_API_KEY']}"}


def main() -> None:
    run_demo(PREFIX)


def run_demo(prefix: str) -> dict[str, GroupReport]:
    """The whole demo under Redis key ``prefix`` (owned: cleared first); raw and fair metrics."""
    data = with_race_feature(load_compas())
    split = compas_split(data, seed=0)
    bb_port, gw_port = free_port(), free_port()
    model_path = CACHE / "models" / "compas_mlp_race_input.npz"
    bb_args = ["-m", "blackbox", "serve", "--port", str(bb_port), "--model-path", str(model_path)]
    bb_args.append("--race-input")
    bb_url = f"http://127.0.0.1:{bb_port}"
    gw_url = f"http://127.0.0.1:{gw_port}"
    model = standin_model_config(bb_url, features=data.feature_names)
    config = CACHE / "demo" / "eraser.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(yaml.safe_dump({"models": [model]}))
    clear_redis_prefix(prefix)
    queue = f"{prefix}-training"
    env = {
        **KEYS,
        "ERASER_CONFIG_FILE": str(config),
        "ERASER_REDIS__KEY_PREFIX": prefix,
        "ERASER_TRAINING__QUEUE": queue,
    }
    gw_args = ["-m", "service.cli", "serve", "--port", str(gw_port)]
    worker_args = ["-m", "patch_training.cli", "worker"]
    print(f"black box  {bb_url}  (stand-in COMPAS MLP, race one of its 8 inputs)")
    with (
        launched(bb_args, f"{bb_url}/v2/health/ready", "demo-blackbox"),
        launched(gw_args, f"{gw_url}/v2/health/ready", "demo-gateway", env=env),
        launched(worker_args, worker_listening(queue), "demo-worker", env=env),
        httpx.Client(base_url=gw_url, timeout=30) as gw,
    ):
        print(f"gateway    {gw_url}  (OpenAPI docs at {gw_url}/docs)")
        print(f"worker     eraser worker on queue {queue!r}")
        _train_patch(gw, data, split.calib)
        return _report(gw, data, split.test)


def _train_patch(gw: httpx.Client, data: CompasData, calib: np.ndarray) -> None:
    """Upload the calibration split and follow the training job until it is done."""
    spec = {"model": "compas", "target": TARGET, "bias": [BIAS], "name": "race-demo"}
    r = gw.post(
        "/patches",
        headers=ADMIN,
        data={"spec": orjson.dumps(spec | {"activate": True}).decode()},
        files={"calibration": ("compas_calibration.csv", compas_calibration_csv(data, calib))},
    )
    r.raise_for_status()
    accepted = r.json()
    print(f"calibration: {accepted['rows']} rows uploaded, job {accepted['job_id']} queued")
    job = _wait_for_job(gw, accepted["status_url"])
    for patch in job["result"]["patches"]:
        evidence = patch["evidence"]
        raw, fair = (evidence[s]["eo_bias"]["estimate"] for s in ("raw", "fair"))
        change = evidence["change"]["eo_bias"]
        print(
            f"patch {patch['name']} v{patch['version']}: {patch['status']} at alpha="
            f"{patch['alpha']}, active: {patch['activated']}\n"
            f"  on {evidence['rows']} verdict rows: EO bias {raw:.2f} -> {fair:.2f}, change "
            f"{change['estimate']:.2f} [{change['low']:.2f}, {change['high']:.2f}] "
            f"({100 * evidence['confidence']:g}% interval)"
        )
        print(f"  report: {gw.base_url}/patches/{patch['name']}/versions/{patch['version']}/report")
    print(f"training took {sum(job['result']['timings_s'].values()):.1f} s in the worker")
    if job["result"]["stack_revision"] is not None:
        _wait_until_served(gw, job["result"]["stack_revision"])


def _wait_until_served(gw: httpx.Client, revision: int, timeout_s: float = 30) -> None:
    def served() -> int | None:
        return gw.get("/models/compas/stack", headers=ADMIN).json()["served_revision"]

    wait_until_served(served, revision, timeout_s, "the gateway")


def _wait_for_job(gw: httpx.Client, url: str, timeout_s: float = 300) -> dict:
    def show(job: dict) -> None:
        print(f"  job {job['state']}: {(job.get('progress') or {}).get('stage')}")

    return wait_for_job(lambda: gw.get(url, headers=ADMIN).json(), timeout_s, on_stage=show)


def _report(gw: httpx.Client, data: CompasData, test: np.ndarray) -> dict[str, GroupReport]:
    preds: list[dict] = []
    revisions = set()
    for chunk in np.array_split(test, int(np.ceil(len(test) / 500))):
        body = {"model": "compas", "instances": data.X[chunk].tolist(), "return_raw": True}
        r = gw.post("/predict", headers=PREDICT, json=body)
        r.raise_for_status()
        answer = r.json()
        preds += answer["predictions"]
        revisions.add(answer["revision"])
    if len(revisions) != 1:
        raise RuntimeError(f"the test split was served by several stack revisions: {revisions}")
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
