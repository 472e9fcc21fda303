"""The short form of ``make bench-reliability`` (what CI runs): real Redis, stand-in and gateway
processes, every fault once. The targets asserted here are the ones that must hold on any
machine — nothing lost, nothing tampered served, no 5xx; timings are the full run's business
(``bench/results/reliability.json``), not a timed test's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.reliability.__main__ import SCENARIOS
from bench.reliability.patches import Entry, Ledger, random_patch
from bench.reliability.results import TARGETS
from blackbox.data import load_compas
from blackbox.model import CLASSES
from deploy.local.processes import ROOT

# Starts Redis, the stand-in, three gateways and a worker; the module's one quick run is set up
# inside the first test, so every test gets the whole run's time limit.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

MUST_HOLD = {
    "hotswap": ("failed", "mismatched"),
    "redis_kill": ("failed", "mismatched"),
    "redis_hang": ("failed", "mismatched"),
    "redis_empty_restart": ("failed", "mismatched"),
    "tamper": ("served_tampered",),
    "poisoned_cache": ("versions_from_poisoned_cache",),
    "fuzz": ("server_errors",),
}


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("reliability") / "quick.json"
    markdown = (ROOT / "BENCHMARKS.md").read_text()
    cmd = [sys.executable, "-m", "bench.reliability", "--quick", "--out", str(out)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (ROOT / "BENCHMARKS.md").read_text() == markdown, "--quick must not rewrite it"
    return json.loads(Path(out).read_text())


def test_every_scenario_ran_and_every_target_was_judged(quick: dict) -> None:
    for name in SCENARIOS:
        assert name in quick and "error" not in quick[name], quick.get(name)
    assert set(quick["_targets"]) == {t[0] for t in TARGETS}
    assert all(t["met"] is not None for t in quick["_targets"].values()), quick["_targets"]
    assert {"date", "cores", "durations_s", "mode"} <= set(quick["_meta"])


@pytest.mark.parametrize("scenario", sorted(MUST_HOLD))
def test_nothing_lost_nothing_tampered_no_server_error(quick: dict, scenario: str) -> None:
    for key in MUST_HOLD[scenario]:
        assert quick[scenario][key] == 0, (scenario, key, quick[scenario])


def test_replicas_keep_the_last_verified_revision_through_redis_faults(quick: dict) -> None:
    for scenario in ("redis_kill", "redis_hang", "redis_empty_restart"):
        assert quick[scenario]["served_last_verified"], quick[scenario]


def test_the_ledger_catches_an_answer_that_is_not_its_stack() -> None:
    """The mismatch count means something only if a wrong answer is caught."""
    rows = load_compas().X[:2]
    ledger = Ledger()
    ledger.record(1, [Entry("p", 1, 1.5, random_patch(1))])
    raw = np.array([[0.3, 0.7], [0.6, 0.4]])
    fair = ledger.expected(1, rows, raw)
    preds = [
        {"probabilities": dict(zip(CLASSES, f, strict=True)),
         "raw_probabilities": dict(zip(CLASSES, r, strict=True))}
        for f, r in zip(fair, raw, strict=True)
    ]  # fmt: skip
    patches = [{"name": "p", "version": 1, "alpha": 1.5}]
    answer = {"revision": 1, "patches": patches, "debiased": True, "predictions": preds}
    assert ledger.check(answer, rows) is None
    answer["predictions"][0]["probabilities"][CLASSES[0]] += 1e-3
    assert "off by" in ledger.check(answer, rows)
    assert "never activated" in ledger.check(answer | {"revision": 2}, rows)
