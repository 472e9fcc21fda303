"""What the benchmark does to the running gateway, as an operator and as an application would:
upload a calibration set, follow the job, re-weight the served stack, ask for predictions."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import orjson

from bench.quality.datasets import Table, Task
from bench.quality.system import KEYS
from deploy.local.jobs import wait_until_served

PREDICT = {"Authorization": f"Bearer {KEYS['ERASER_PREDICT_API_KEY']}"}
ADMIN = {"Authorization": f"Bearer {KEYS['ERASER_ADMIN_API_KEY']}"}
PREDICT_CHUNK = 500  # rows per /predict call (the gateway takes up to 1,024)


@dataclass(frozen=True)
class Served:
    """One pass over a table through ``/predict``: raw and fair class probabilities, and the
    stack that answered (every chunk must come from the same revision)."""

    raw: np.ndarray
    fair: np.ndarray
    revision: int


def calibration_file(task: Task, table: Table, bias_column: bool = True) -> tuple[str, bytes]:
    """The operator's upload: a CSV with named columns for tabular models, an NPZ of 8-bit
    images plus label arrays otherwise (the formats ``POST /patches`` accepts). Without
    ``bias_column`` (FMD: the attribute is an input column) the file holds features and target
    only."""
    labels = np.array(task.classes)[table.y]
    bias = [task.bias_name] if bias_column else []
    if task.feature_names is None:
        buf = io.BytesIO()
        np.savez_compressed(buf, x=table.X.astype(np.uint8),
                            **{task.target_name: labels},
                            **({task.bias_name: table.b} if bias_column else {}))  # fmt: skip
        return f"{task.dataset}.npz", buf.getvalue()
    out = io.StringIO()
    out.write(",".join([*task.feature_names, task.target_name, *bias]) + "\n")
    for row, label, group in zip(table.X, labels, table.b, strict=True):
        out.write(",".join([*(f"{v:g}" for v in row), label, *([group] if bias else [])]) + "\n")
    return f"{task.dataset}.csv", out.getvalue().encode()


class Gateway:
    def __init__(self, url: str, timeout_s: float = 300.0) -> None:
        self.http = httpx.Client(base_url=url, timeout=timeout_s)

    def close(self) -> None:
        self.http.close()

    def submit(
        self, model: str, task: Task, table: Table, seed: int, bias_column: bool = True,
        pairs: tuple[str, bytes] | None = None, **fields: Any,
    ) -> str:  # fmt: skip
        """Upload a calibration set; the job activates the patch if it passes the gate.
        ``fields``: more of the spec (``method``, ``poisoner``, ``bias``, ...); without
        ``bias_column`` the upload has no bias column (FMD reads the attribute from x);
        ``pairs``: an FMD job's counterfactual pairs file (name, NPZ bytes)."""
        spec = {"model": model, "target": task.target_name, "bias": [task.bias_name],
                "seed": seed, "activate": True, **fields}  # fmt: skip
        r = self.http.post(
            "/patches",
            headers=ADMIN,
            data={"spec": orjson.dumps(spec).decode()},
            files={
                "calibration": calibration_file(task, table, bias_column),
                **({"pairs": pairs} if pairs is not None else {}),
            },
        )
        _check(r)
        return r.json()["status_url"]

    def submit_audit(self, spec: dict[str, Any], files: dict[str, tuple[str, bytes]]) -> str:
        """Upload a counterfactual bias audit (``POST /audits``); its status URL."""
        r = self.http.post(
            "/audits", headers=ADMIN, data={"spec": orjson.dumps(spec).decode()}, files=files
        )
        _check(r)
        return r.json()["status_url"]

    def job(self, status_url: str) -> dict[str, Any]:
        r = self.http.get(status_url, headers=ADMIN)
        _check(r)
        return r.json()

    def report(self, name: str, version: int) -> dict[str, Any]:
        """A registered version's training report (JSON)."""
        r = self.http.get(f"/patches/{name}/versions/{version}/report", headers=ADMIN)
        _check(r)
        return r.json()

    def wait_served(self, model: str, revision: int, timeout_s: float = 60) -> None:
        """Wait until the gateway hot-loaded ``revision`` of ``model``'s stack."""

        def served() -> int | None:
            r = self.http.get(f"/models/{model}/stack", headers=ADMIN)
            _check(r)
            return r.json()["served_revision"]

        wait_until_served(served, revision, timeout_s, model)

    def set_alpha(self, model: str, alpha: float) -> int:
        """Re-weight every patch of the active stack to ``alpha``; the new revision."""
        r = self.http.get(f"/models/{model}/stack", headers=ADMIN)
        _check(r)
        stack = r.json()["stack"]
        entries = [{**e, "alpha": alpha} for e in stack["entries"]]
        body = {"entries": entries, "expected_revision": stack["revision"],
                "reason": f"quality benchmark: alpha={alpha}"}  # fmt: skip
        r = self.http.put(f"/models/{model}/stack", headers=ADMIN, json=body)
        _check(r)
        return int(r.json()["stack"]["revision"])

    def predict(self, model: str, classes: list[str], x: np.ndarray) -> Served:
        raw, fair, revisions = [], [], set()
        for start in range(0, len(x), PREDICT_CHUNK):
            body = {"model": model, "instances": x[start : start + PREDICT_CHUNK],
                    "return_raw": True}  # fmt: skip
            r = self.http.post(
                "/predict",
                headers={**PREDICT, "Content-Type": "application/json"},
                content=orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY),
            )
            _check(r)
            answer = orjson.loads(r.content)
            revisions.add(answer["revision"])
            for p in answer["predictions"]:
                raw.append([p["raw_probabilities"][c] for c in classes])
                fair.append([p["probabilities"][c] for c in classes])
        if len(revisions) != 1:
            raise RuntimeError(f"{model}: one pass was served by several revisions {revisions}")
        return Served(np.array(raw), np.array(fair), revisions.pop())


def _check(r: httpx.Response) -> None:
    if r.status_code >= 400:
        raise RuntimeError(f"{r.request.method} {r.request.url.path} -> {r.status_code}: {r.text}")
