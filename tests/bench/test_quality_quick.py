"""`python -m bench.quality --quick` end to end: black box, gateway and worker as processes, a
real Redis, real training jobs, predictions over HTTP (one seed, COMPAS only)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import redis

from bench.quality.results import ROWS
from bench.quality.system import PREFIX
from deploy.local.processes import ROOT

pytestmark = pytest.mark.slow  # end-to-end: real processes (`pytest -m "not slow"` skips)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_quick_quality_run_debiases_compas_through_the_service(tmp_path) -> None:
    markdown_before = (ROOT / "BENCHMARKS.md").read_bytes()
    out = tmp_path / "quick"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.quality", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((out / "quality.json").read_text())
    compas = res["compas"]
    expected = {f"{v}.{r}" for v in ("vanilla", "unfair") for r in ROWS}
    expected |= {f"{v}.small.{r}" for v in ("vanilla", "unfair") for r in ROWS[1:]}
    expected |= {"vanilla.poisoner_eraser"}  # the one label-free job of --quick
    expected |= {"vanilla.cf_average", "vanilla.fmd", "vanilla.eraser+fmd"}  # issue 15, §3-4
    assert set(compas) == expected
    for row in compas.values():
        assert row["n"] == 1
        assert all(0.0 <= row[m] <= 100.0 for m in ("avg", "worst", "eo", "accuracy", "cf_bias"))
    raw, fair = compas["vanilla.raw"], compas["vanilla.eraser"]
    assert fair["eo"] < raw["eo"] - 5  # the served patch really removed most of the bias
    assert fair["worst"] > raw["worst"]
    for peer in ("fairlearn_to", "error_parity", "error_parity_relaxed"):
        assert compas[f"vanilla.{peer}"]["needs_sensitive_attribute"] is True
    assert "needs_sensitive_attribute" not in compas["vanilla.linearpost_blind"]
    assert set(res["_targets"]["compas"]) == {"eo <= 3.0", "worst >= 55", "avg >= raw - 1.5"}
    assert len(res["_runs"]) == 4
    assert {r["status"] for r in res["_runs"]} <= {"validated", "rejected"}
    gate = res["_gate"]["this_run"]["compas"]
    assert gate["validated"] + gate["rejected"] == 4 and gate["with_interval"] == gate["validated"]
    for run in res["_runs"]:  # the verdict rows took no part in fitting: fewer than the set
        assert 0 < run["verdict"]["rows"] < run["calibration_rows"]
        low, estimate, high = (run["verdict"]["eo_bias_change"][i] for i in (1, 0, 2))
        assert low <= estimate <= high
    label_free = res["_label_free"]["runs"]
    assert [(r["row"], r["kind"]) for r in label_free] == [("poisoner_eraser", "poisoner-eraser")]
    job = label_free[0]
    assert job["status"] in {"validated", "rejected"} and job["calibration_rows"] == 704
    discovery = job["bias_discovery"]["tuning_out_of_fold"]  # the report's, bias column scored
    assert 0 <= discovery["precision_pct"] <= 100 and 0 <= discovery["agreement_pct"] <= 100
    if job["activated"]:  # the offline replay computes what the gateway served
        assert job["rows"]["poisoner_eraser_candidate"]["agreement"] >= 99.0
    assert compas["vanilla.poisoner_eraser"]["label_free"] is True
    assert "label-free, every setting" in res["_targets"]
    # counterfactual bias: the race-reading model moves with race; averaging over race does not
    assert compas["vanilla.raw"]["cf_bias"] > 1.0
    assert compas["vanilla.cf_average"]["cf_bias"] < 1e-3  # measured, from a second pass
    assert compas["vanilla.cf_average"]["upstream_calls_per_decision"] == 2
    fmd = res["_fmd"]["runs"]
    assert [(r["row"], r["attribute"]) for r in fmd] == [("fmd", "african_american")]
    assert fmd[0]["status"] in {"validated", "rejected"} and fmd[0]["calibration_rows"] == 704
    assert fmd[0]["verdict_counterfactual_bias"]["raw"]["estimate"] >= 0
    if fmd[0]["activated"]:  # the offline replay computes what the gateway served
        assert fmd[0]["rows"]["fmd_candidate"]["agreement"] >= 99.0
    assert set(res["_targets"]["compas, fmd"]) == {
        "fmd cf_bias cut >= 70%",
        "fmd avg drop <= 1",
        "eraser+fmd eo <= min(eraser_tuned, fmd)",
    }
    (audit,) = res["_audit"]  # the product's audit (POST /audits) of the same raw model
    race = audit["attributes"]["african_american"]["bias"]
    assert race["estimate"] == pytest.approx(compas["vanilla.raw"]["cf_bias"], abs=0.01)
    assert race["low"] <= race["estimate"] <= race["high"] and audit["rows_per_second"] > 0
    assert (out / "quality_compas.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (ROOT / "BENCHMARKS.md").read_bytes() == markdown_before  # quick runs never publish
    with redis.Redis() as client:
        assert not list(client.scan_iter(match=f"{PREFIX}:*", count=500))
