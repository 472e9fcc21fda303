"""The audit's own figures on the deployed vanilla models (issue 15, §4): the product's
counterfactual bias audit (``POST /audits`` → ``eraser worker``, docs/audit.md) run on each
setting's seed-0 vanilla black box, with the audit's throughput (rows queried per second).

What is audited, on the test split (which nothing was fitted on):

- COMPAS: its input columns ``african_american`` (the benchmark's bias) and ``sex``;
- Adult: its input column ``sex_male``;
- Colored MNIST: the background colour, through uploaded pairs — each of the 1,000 test digits
  once, digit i in colour i mod 10 (so every colour is a group of 100), and its nine recolourings
  (``counterfactual.counterfactual_test``: the same digit in the other colours).

Only the raw stage is kept: the served stage is whatever stack the benchmark's Eraser job had
active when the worker ran the audit (the fixed-split rows measure what is served).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.quality.client import Gateway
from bench.quality.counterfactual import counterfactual_test
from bench.quality.datasets import Task
from bench.quality.protocol import Run
from blackbox.data import RACE_FEATURE
from deploy.local.jobs import wait_for_job

ATTRIBUTES: dict[str, list[str]] = {
    "compas": [RACE_FEATURE, "sex"],
    "adult": ["sex_male"],
    "cmnist": ["colour"],
}
AUDIT_SEED = 0  # one seed's deployed model per setting
DRAWS = 2000  # bootstrap resamples (the audit's default)


@dataclass(frozen=True)
class AuditRun:
    setting: str
    seed: int
    task: Task

    @property
    def gateway_model(self) -> str:
        """The benchmark's vanilla model of this seed (full calibration set), already served."""
        return f"{self.setting}-vanilla-s{self.seed}"


def plan_audits(runs: list[Run]) -> list[AuditRun]:
    """One audit per audited setting among the planned runs (seed 0, vanilla, full set)."""
    return [
        AuditRun(r.setting, r.seed, r.task)
        for r in runs
        if r.setting in ATTRIBUTES and r.seed == AUDIT_SEED and r.variant == "vanilla"
        and r.calibration == "full" and r.fold is None
    ]  # fmt: skip


def audit_upload(run: AuditRun) -> tuple[dict[str, Any], dict[str, tuple[str, bytes]]]:
    """The audit's spec fields and files (``data``, and ``pairs`` for Colored MNIST)."""
    task = run.task
    spec = {"model": run.gateway_model, "attributes": ATTRIBUTES[run.setting], "draws": DRAWS,
            "seed": run.seed, "top_rows": 0}  # fmt: skip
    if task.feature_names is not None:
        out = io.StringIO()
        out.write(",".join(task.feature_names) + "\n")
        for row in task.test.X:
            out.write(",".join(f"{v:g}" for v in row) + "\n")
        return spec, {"data": (f"{task.dataset}-test.csv", out.getvalue().encode())}
    cf = counterfactual_test(task)
    digits = len(task.test) // cf.k
    rows = (np.arange(digits) % cf.k) * digits + np.arange(digits)  # digit i in colour i mod k
    data, pairs = io.BytesIO(), io.BytesIO()
    np.savez_compressed(data, x=task.test.X[rows].astype(np.uint8), colour=task.test.b[rows])
    np.savez_compressed(pairs, x_cf=task.test.X[cf.index[rows]].astype(np.uint8))
    return spec, {
        "data": (f"{task.dataset}-test.npz", data.getvalue()),
        "pairs": (f"{task.dataset}-recoloured.npz", pairs.getvalue()),
    }


def submit_audit(gw: Gateway, run: AuditRun) -> str:
    spec, files = audit_upload(run)
    return gw.submit_audit(spec, files)


def evaluate_audit(gw: Gateway, run: AuditRun, status_url: str) -> dict[str, Any]:
    """Wait for the worker to finish the audit; its record (``audit_record``)."""
    return audit_record(run, wait_for_job(lambda: gw.job(status_url), timeout_s=1800))


def audit_record(run: AuditRun, audit: dict[str, Any]) -> dict[str, Any]:
    """What ``quality.json`` keeps of a finished audit (``GET /audits/{id}``): per attribute
    the raw B and flip share with their intervals; rows, queried rows, time and throughput."""
    result = audit["result"]
    return {
        "setting": run.setting,
        "seed": run.seed,
        "model": run.gateway_model,
        "rows": result["rows"],
        "queried_rows": result["queried_rows"],
        "cached_outputs": result["cached_outputs"],
        "rows_per_second": round(float(result["rows_per_second"]), 1),
        "timings_s": result["timings_s"],
        "confidence": result["confidence"],
        "attributes": {
            a["attribute"]: {
                "source": a["source"],
                "counterfactuals_per_row": a["counterfactuals_per_row"],
                "bias": a["raw"]["bias"],
                "flip_share": a["raw"]["flip_share"],
            }
            for a in result["attributes"]
        },
    }
