"""Gate statistics of the quality benchmark: false validations and coverage, by hand."""

from __future__ import annotations

from bench.quality.gate_stats import gate_stats


def run(status: str, raw: tuple[float, float], tuned: tuple[float, float],
        interval: list[float] | None = None, setting: str = "compas") -> dict:  # fmt: skip
    """``raw`` and ``tuned`` are (EO, accuracy) on the test split; ``interval`` the job's EO
    change interval."""
    return {
        "setting": setting, "variant": "vanilla", "calibration": "full", "seed": 0,
        "status": status, "gate_eo_change": interval,
        "rows": {"raw": {"eo": raw[0], "accuracy": raw[1]},
                 "eraser_tuned": {"eo": tuned[0], "accuracy": tuned[1]}},
    }  # fmt: skip


def test_false_validations_are_validated_patches_that_did_not_help_or_cost_too_much() -> None:
    runs = [
        run("validated", (20, 70), (5, 69), [-20, -10]),  # helped, covered (−15)
        run("validated", (20, 70), (21, 70), [-5, 2]),  # EO rose: false, covered (+1)
        run("validated", (20, 70), (10, 60), [-20, -15]),  # cost 10 points: false; −10 outside
        run("rejected", (20, 70), (25, 50)),  # rejected: never counted as false
        run("validated", (20, 70), (15, 70), None, setting="adult"),  # no interval reported
    ]
    stats = gate_stats(runs, acc_tolerance_pp=5.0)
    compas = stats["compas"]
    assert (compas["validated"], compas["rejected"], compas["false_validations"]) == (3, 1, 2)
    assert compas["coverage"] == round(2 / 3, 3) and compas["with_interval"] == 3
    assert stats["adult"]["coverage"] is None
    assert stats["all"]["validated"] == 4 and stats["all"]["false_validations"] == 2


def test_missed_patches_are_rejected_ones_whose_replay_held_on_the_test_split() -> None:
    helped = run("rejected", (20, 70), (20, 70), [-12, 1])
    helped["rows"]["candidate"] = {"eo": 8, "accuracy": 68}  # −12 EO, −2 accuracy: held
    costly = run("rejected", (20, 70), (20, 70), [-12, 1])
    costly["rows"]["candidate"] = {"eo": 8, "accuracy": 60}  # −10 accuracy: rightly rejected
    unmeasured = run("rejected", (20, 70), (20, 70), [0, 0])
    unmeasured["verdict"] = {"comparable_classes": 0}  # verdict rows could not measure EO
    stats = gate_stats([helped, costly, unmeasured], acc_tolerance_pp=5.0)["compas"]
    assert (stats["missed"], stats["missed_runs"], stats["replayed"]) == (
        1, ["compas/vanilla/full/seed 0"], 2)  # fmt: skip
    # coverage over every judged patch: −12 lies in [−12, 1] twice; the unmeasured one is out
    assert (stats["coverage_all"], stats["coverage_all_judged"]) == (1.0, 2)
    low, high = stats["coverage_all_interval"]
    assert 0 < low < 1 and high == 1.0
    assert stats["coverage"] is None  # nothing validated
