"""Stacked attributes: the second attribute of each dataset, the uploads, and the summary's
paired verdicts on synthetic records (no processes)."""

from __future__ import annotations

import numpy as np
import pytest

from bench.quality.client import Served
from bench.quality.datasets import DATA_DIR, _load_adult, adult_task, compas_task
from bench.quality.stacked import (
    WHICH,
    StackRun,
    attribute_names,
    calibration_csv,
    evaluate_stacked,
    plan_stacked,
    second_attribute,
    seed_data,
    stack_calibration,
    stacked_markdown,
    stacked_summary,
)
from patch_training.metrics import group_report
from service.calibration.loader import load_calibration
from service.errors import InvalidCalibrationSet

N = 4000
ROW = np.arange(N)
Y = ROW % 2
RACE = np.where(ROW % 4 < 2, "African-American", "Caucasian")
# a quarter of African-American rows are Female, three quarters of Caucasian ones: unequal
# joint cells, so a sex-dependent error shows up as a race gap only if cells are size-weighted
SEX = np.where(np.isin(ROW % 16, [12, 13, 6, 7, 10, 11, 14, 15]), "Female", "Male")


def records_of(
    seed: int, right: dict[str, np.ndarray | float], replayed: dict | None = None
) -> list[dict]:
    """``evaluate_stacked``-shaped COMPAS records: each method right on a row with its own
    probability (a scalar, or one per row); the replayed patches as served unless
    ``replayed`` gives their own probabilities."""
    rng = np.random.default_rng(seed)
    y, race, sex = Y, RACE, SEX
    u = rng.random(N)  # one draw per row for every method: their errors overlap (paired)
    pred = {m: np.where(u < np.broadcast_to(p, N), y, 1 - y) for m, p in right.items()}
    again = {m: np.where(u < np.broadcast_to(p, N), y, 1 - y) for m, p in (replayed or {}).items()}
    attrs = {"race": race, "sex_group": sex}
    patches = {"a": ["race"], "b": ["sex_group"], "ab": ["race", "sex_group"]}
    return [
        {"setting": "compas", "seed": seed, "which": w, "bias": patches[w],
         "patches": [{"bias": c, "status": "validated", "alpha": 1.0, "activated": True,
                      "reason": "validated"} for c in patches[w]],
         "served_revision": 1, "y": y, "attributes": attrs, "raw": pred["raw"], "fair": pred[w],
         "candidate": again.get(w, pred[w])}
        for w in WHICH
    ]  # fmt: skip


def test_a_stack_equal_to_each_patch_alone_is_no_worse() -> None:
    same = {"raw": 0.7, "a": 0.8, "b": 0.8, "ab": 0.8}
    block = stacked_summary([r for s in (0, 1) for r in records_of(s, same)])["compas"]
    assert block["attributes"] == ["race", "sex_group"] and block["seeds"] == [0, 1]
    assert block["groups"] == 8 and block["smallest_group"] == N // 16
    for column in ("race", "sex_group"):
        p = block["paired"][column]
        assert p["verdict"] == "no worse"
        assert p["eo"]["estimate"] == 0 and p["eo"]["low"] == 0 and p["eo"]["high"] == 0
    assert block["target"]["met"] is True
    assert block["validated"]["ab"] == {"race": 2, "sex_group": 2}
    assert block["validated"]["a"] == {"race": 2}


def test_a_much_worse_stack_is_worse_on_the_attribute_it_hurts() -> None:
    hurt = np.where((SEX == "Female") & (Y == 1), 0.3, 0.9)  # the stack fails one sex group
    right = {"raw": 0.7, "a": 0.9, "b": 0.9, "ab": hurt}
    block = stacked_summary([r for s in (0, 1, 2) for r in records_of(s, right)])["compas"]
    on_sex = block["paired"]["sex_group"]
    assert on_sex["eo"]["verdict"] == "worse" and on_sex["eo"]["low"] > 20
    assert on_sex["worst"]["verdict"] == "worse" and on_sex["worst"]["high"] < -40
    assert on_sex["verdict"] == "worse"
    assert block["paired"]["race"]["verdict"] == "worse"  # worst group is shared by both
    assert block["target"]["met"] is False
    assert block["methods"]["ab"]["eo_sex_group"] > block["methods"]["b"]["eo_sex_group"] + 20


def test_figures_agree_with_group_report_and_the_paired_estimate_with_the_means() -> None:
    right = {"raw": 0.6, "a": 0.8, "b": np.where(SEX == "Male", 0.9, 0.7), "ab": 0.78}
    records = [r for s in (0, 1) for r in records_of(s, right)]
    block = stacked_summary(records)["compas"]
    r0 = next(r for r in records if r["seed"] == 0 and r["which"] == "b")
    eo = group_report(r0["y"], r0["fair"], r0["attributes"]["sex_group"]).eo_bias
    assert block["methods"]["b"]["eo_sex_group_seeds"][0] == pytest.approx(100 * eo, abs=0.01)
    means = block["methods"]
    assert means["b"]["eo_race"] > 5  # 0.85 vs 0.75 by race, through the sex mix
    for column, alone in (("race", "a"), ("sex_group", "b")):
        change = means["ab"][f"eo_{column}"] - means[alone][f"eo_{column}"]
        assert block["paired"][column]["eo"]["estimate"] == pytest.approx(change, abs=0.02)
        p = block["paired"][column]["eo"]
        assert p["low"] <= p["estimate"] <= p["high"] and p["high"] > p["low"]
    lines = "\n".join(stacked_markdown({"compas": block}))
    assert "| stack (race + sex) |" in lines and f"{means['ab']['worst']:.2f}" in lines


def test_records_must_cover_every_run_once_on_the_same_rows() -> None:
    records = records_of(0, {"raw": 0.7, "a": 0.8, "b": 0.8, "ab": 0.8})
    with pytest.raises(ValueError, match="exactly one run"):
        seed_data(records[:2])
    with pytest.raises(ValueError, match="exactly one run"):
        seed_data([*records, records[0]])
    bad = dict(records[2], raw=1 - records[2]["raw"])
    with pytest.raises(ValueError, match="raw decisions differ"):
        seed_data([*records[:2], bad])


def test_compas_sex_is_read_from_the_sex_input() -> None:
    task = compas_task(0)
    test = task.test.subset(np.arange(200))
    sex = second_attribute(task, test)
    column = test.X[:, task.feature_names.index("sex")]
    assert set(sex) == {"Male", "Female"}
    assert np.array_equal(sex == "Male", column == 1.0)
    assert np.mean(second_attribute(task, task.test) == "Male") > 0.7  # COMPAS is ~80 % male
    assert attribute_names("compas") == ("race", "sex_group")


def test_adult_race_is_white_or_not_as_in_the_raw_codes() -> None:
    task = adult_task(0)
    raw = _load_adult(DATA_DIR)
    vocab = [str(v) for v in raw["vocab_race"]]
    idx = np.arange(0, 15060, 15)
    race = second_attribute(task, task.test.subset(idx))
    expected = np.array([vocab[c] for c in raw["test_race"][idx]]) == "White"
    assert set(race) == {"White", "non-White"}
    assert np.array_equal(race == "White", expected)
    assert attribute_names("adult") == ("sex", "race")


def test_uploads_carry_their_jobs_attribute_columns_and_the_gateway_reads_them() -> None:
    runs = {r.which: r for r in plan_stacked(["compas", "cmnist"], [0], DATA_DIR)}
    assert (
        sorted(runs) == sorted(WHICH) and runs["ab"].gateway_model == "compas-vanilla-s0-stack-ab"
    )
    assert runs["ab"].model().upstream == "compas-vanilla-s0"
    ab = runs["ab"]
    name, data = stack_calibration(ab)
    header = data.decode().splitlines()[0].split(",")
    assert name.endswith(".csv") and header[-2:] == ["race", "sex_group"]
    parsed = load_calibration(data, ab.model_config(), ab.task.target_name, ab.bias, 10**6, name)
    assert np.array_equal(parsed.bias["race"], ab.task.calib.b)
    assert np.array_equal(parsed.bias["sex_group"], second_attribute(ab.task, ab.task.calib))
    single = stack_calibration(runs["b"])[1].decode().splitlines()[0].split(",")
    assert "race" not in single and single[-1] == "sex_group"


def test_adult_upload_and_why_compas_sex_is_not_called_sex() -> None:
    task = adult_task(0)
    run = StackRun("adult", 0, task, "ab")
    table = task.calib.subset(np.arange(300))
    columns = {"sex": table.b, "race": second_attribute(task, table)}
    name, data = calibration_csv(task, table, columns)
    parsed = load_calibration(data, run.model_config(), task.target_name, run.bias, 10**6, name)
    assert sorted(parsed.bias) == ["race", "sex"]
    compas = StackRun("compas", 0, compas_task(0), "ab")
    rows = compas.task.calib.subset(np.arange(50))
    clash = {"race": rows.b, "sex": second_attribute(compas.task, rows)}
    name, data = calibration_csv(compas.task, rows, clash)
    with pytest.raises(InvalidCalibrationSet, match="features"):
        load_calibration(data, compas.model_config(), "two_year_recid", ["race", "sex"], 10**6)


class FakeGateway:
    """``job`` / ``wait_served`` / ``predict`` as the running gateway answers them: a raw model
    right on every test row, and the stack's answer (raw, or every decision flipped)."""

    def __init__(self, y: np.ndarray, flip: set[str]) -> None:
        self.y, self.flip = y, flip
        self.served: list[tuple[str, int]] = []

    def job(self, status_url: str) -> dict:
        which = status_url.rsplit("-", 1)[1]
        bias = {"a": ["race"], "b": ["sex_group"], "ab": ["race", "sex_group"]}[which]
        patches = [
            {
                "name": f"p-{c}",
                "bias": c,
                "status": "validated",
                "alpha": 0.5,
                "activated": True,
                "reason": "validated",
            }
            for c in bias
        ]
        return {"state": "finished", "result": {"patches": patches, "stack_revision": 3}}

    def wait_served(self, model: str, revision: int) -> None:
        self.served.append((model, revision))

    def predict(self, model: str, classes: list[str], x: np.ndarray) -> Served:
        assert len(x) == len(self.y)
        raw = np.eye(2)[self.y]
        fair = raw[:, ::-1] if model.rsplit("-", 1)[1] in self.flip else raw
        return Served(raw, fair, 3)


def test_evaluated_records_flow_into_the_summary() -> None:
    runs = plan_stacked(["compas"], [0], DATA_DIR)
    gw = FakeGateway(runs[0].task.test.y, flip={"ab"})  # a stack wrong on every row
    replayed: list[list[str]] = []

    def replay(patches: list[dict], model: object, x: np.ndarray, raw: np.ndarray) -> np.ndarray:
        replayed.append([p["name"] for p in patches])
        return raw[:, ::-1]  # every replayed stack wrong on every row (argmax is all it needs)

    records = [
        evaluate_stacked(gw, r, f"/jobs/{r.gateway_model}", replay)  # type: ignore[arg-type]
        for r in runs
    ]
    assert replayed == [["p-race"], ["p-sex_group"], ["p-race", "p-sex_group"]]
    assert gw.served == [(r.gateway_model, 3) for r in runs]
    first = records[0]
    assert first["patches"][0]["alpha"] == 0.5 and len(records[2]["patches"]) == 2
    assert sorted(first["attributes"]) == ["race", "sex_group"]
    assert len(first["fair"]) == len(runs[0].task.test) == len(first["attributes"]["sex_group"])
    block = stacked_summary(records)["compas"]
    assert block["methods"]["a"]["accuracy"] == 100 and block["methods"]["ab"]["accuracy"] == 0
    assert block["paired"]["race"]["worst"]["verdict"] == "worse"
    assert block["validated"]["ab"] == {"race": 1, "sex_group": 1}
    assert block["candidate"]["methods"]["a"]["accuracy"] == 0


def test_a_stack_counts_as_served_only_where_both_patches_were() -> None:
    from bench.quality.stacked import _stacks_served

    both = [{"activated": True}, {"activated": True}]
    one = [{"activated": True}, {"activated": False}]
    seeds = {0: {"patches": {"ab": both}}, 1: {"patches": {"ab": one}}, 2: {"patches": {"ab": []}}}
    assert _stacks_served(seeds) == 1


def test_a_stack_the_gate_kept_from_serving_is_judged_on_its_replay() -> None:
    served = {"raw": 0.7, "a": 0.7, "b": 0.7, "ab": 0.7}  # every patch rejected: raw served
    hurt = np.where((SEX == "Female") & (Y == 1), 0.3, 0.9)
    replayed = {"a": 0.9, "b": 0.9, "ab": hurt}
    records = [r for s in (0, 1, 2) for r in records_of(s, served, replayed)]
    block = stacked_summary(records)["compas"]
    assert block["target"]["met"] is True  # nothing stacked was served: trivially no worse
    assert block["target"]["met_candidates"] is False
    assert block["candidate"]["paired"]["sex_group"]["verdict"] == "worse"
    assert block["methods"]["ab"]["accuracy"] == block["methods"]["raw"]["accuracy"]
    lines = "\n".join(stacked_markdown({"compas": block}))
    assert "Target, replayed stacks: **missed**." in lines and "| replayed |" in lines
