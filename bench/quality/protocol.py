"""The benchmark protocol: which deployed models, which calibration sets, and how each is
measured through the running gateway.

A *setting* is one results table (a dataset, or Colored MNIST with another colouring); a *run*
is one gateway model: a deployed model (setting × variant × seed) debiased with one calibration
set (the full 1/6, or the small one). Every run's patch comes from a real training job
(``POST /patches`` → ``eraser worker``) and every prediction from ``POST /predict``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from bench.quality.candidate import candidate_probs, candidate_stack_probs
from bench.quality.client import Gateway, Served
from bench.quality.counterfactual import (
    INPUT_ATTRIBUTES,
    CounterfactualTest,
    counterfactual_test,
)
from bench.quality.datasets import (
    OUTER_FOLDS,
    Table,
    Task,
    adult_task,
    cmnist_task,
    compas_task,
    outer_task,
)
from bench.quality.deployed import VARIANTS, Variant
from bench.quality.metrics import eo_noise_floor, row_metrics
from bench.quality.peer_decisions import ATTRIBUTE_AWARE, peer_decisions
from bench.quality.system import PREFIX, GatewayModel, model_entry
from deploy.local.jobs import wait_for_job
from service.settings import ModelConfig

Calibration = Literal["full", "small"]


@dataclass(frozen=True)
class Setting:
    key: str
    title: str
    make_task: Callable[[int, Path], Task]
    variants: tuple[Variant, ...] = VARIANTS
    calibrations: tuple[Calibration, ...] = ("full", "small")


SETTINGS: dict[str, Setting] = {
    s.key: s
    for s in (
        Setting("compas", "COMPAS (bias: race)", lambda seed, _: compas_task(seed)),
        Setting("adult", "Adult (bias: sex)", adult_task),
        Setting("cmnist", "Colored MNIST, ρ = 0.99 (bias: background colour)", cmnist_task),
        Setting(
            "cmnist_rho90",
            "Colored MNIST, ρ = 0.9, calibration colours uniform (bias: background colour)",
            lambda seed, data_dir: cmnist_task(seed, data_dir, rho_train=0.9, rho_calib=0.1),
            variants=("vanilla",),
            calibrations=("full",),
        ),
        Setting(
            "cmnist_aug",
            "Colored MNIST, ρ = 0.99, deployed model trained on augmented digits, calibration "
            "colours uniform (bias: background colour)",
            lambda seed, data_dir: cmnist_task(seed, data_dir, rho_calib=0.1, augmented=True),
            variants=("vanilla",),
            calibrations=("full",),
        ),
    )
}


@dataclass(frozen=True)
class Run:
    setting: str
    variant: Variant
    calibration: Calibration
    seed: int
    task: Task
    fold: int | None = None  # outer cross-validation: which fold is the test split

    @property
    def deployed(self) -> str:
        """The black box's model name (shared by the full and small calibration runs)."""
        fold = "" if self.fold is None else f"-f{self.fold}"
        return f"{self.setting}-{self.variant}-s{self.seed}{fold}"

    @property
    def gateway_model(self) -> str:
        return self.deployed if self.calibration == "full" else f"{self.deployed}-small"

    @property
    def calib(self) -> Table:
        return self.task.calib if self.calibration == "full" else self.task.small_calib

    def model(self) -> GatewayModel:
        t = self.task
        return GatewayModel(self.gateway_model, self.deployed, t.classes, t.input_shape,
                            t.feature_names)  # fmt: skip

    def model_config(self) -> ModelConfig:
        """The gateway's view of the model (the upstream URL is not used offline)."""
        return ModelConfig.model_validate(model_entry(self.model(), "http://127.0.0.1:9"))


OUTER_CV = ("compas", "adult")  # the tabular settings: the outer protocol needs pooled rows


def plan_outer(settings: list[str], seeds: list[int], data_dir: Path) -> list[Run]:
    """The outer cross-validation runs: vanilla model, full calibration set, every fold."""
    return [
        Run(key, "vanilla", "full", seed, outer_task(key, seed, fold, data_dir), fold)
        for seed in seeds
        for key in settings
        if key in OUTER_CV
        for fold in range(OUTER_FOLDS)
    ]


def plan(settings: list[str], seeds: list[int], data_dir: Path) -> list[Run]:
    """Every run of the benchmark, seeds outermost so a partial run still covers all tables."""
    runs = []
    for seed in seeds:
        for key in settings:
            setting = SETTINGS[key]
            task = setting.make_task(seed, data_dir)
            for variant in setting.variants:
                for calibration in setting.calibrations:
                    runs.append(Run(key, variant, calibration, seed, task))
    return runs


def evaluate(gw: Gateway, run: Run, status_url: str) -> dict[str, Any]:
    """Raw, Eraser at the job's α, Eraser at α = 1, the peers and (vanilla model, full
    calibration set) ``cf_average`` on the test split, each with its counterfactual bias: the
    test rows and their counterfactuals go through ``POST /predict`` in one pass."""
    job = wait_for_job(lambda: gw.job(status_url), timeout_s=1800, poll_s=0.2)
    patch = job["result"]["patches"][0]
    task, model = run.task, run.gateway_model
    revision = job["result"]["stack_revision"]
    if revision is not None:
        gw.wait_served(model, revision)
    cf = counterfactual_test(task)
    pool = cf.pool(task.test)
    first = gw.predict(model, task.classes, pool.X)
    rows = {"raw": _scored(task, cf, first.raw)}
    if not task.notes.get("paired_test"):
        pred = np.argmax(first.raw[: len(task.test)], axis=1)
        rows["raw"]["eo_floor"] = eo_noise_floor(task.test.y, pred, task.test.b)
    candidate = candidate_probs(patch, run.model_config(), pool.X, first.raw, PREFIX)
    rows["candidate"] = _scored(task, cf, candidate, log=True)  # the job's patch, served or not
    if patch["activated"]:
        rows["eraser_tuned"] = _scored(task, cf, first.fair)
        rows["candidate"]["agreement"] = _agreement(candidate, first.fair)
        rows["eraser"] = (
            _at_alpha_one(gw, run, first, cf) if patch["alpha"] != 1.0 else rows["eraser_tuned"]
        )
    else:  # rejected by the gate: the gateway keeps serving the raw model, and so do these rows
        served = _scored(task, cf, first.fair)
        rows["eraser_tuned"] = rows["eraser"] = served
    if run.variant == "vanilla" and run.calibration == "full" and run.fold is None:
        rows["cf_average"] = _cf_average(gw, run, first, cf)
    for peer, pred in _peers(gw, run, first, cf).items():
        rows[peer] = row_metrics(task.test.y, pred[: len(task.test)], task.test.b)
        rows[peer]["cf_bias"] = cf.decision_bias(pred)
        if peer in ATTRIBUTE_AWARE:
            rows[peer]["needs_sensitive_attribute"] = True
    return {
        "setting": run.setting,
        "variant": run.variant,
        "calibration": run.calibration,
        "seed": run.seed,
        "calibration_rows": len(run.calib),
        "alpha": patch["alpha"],
        "status": patch["status"],
        "reason": patch["reason"],
        "served_revision": first.revision,
        "job_s": round(sum(job["result"]["timings_s"].values()), 2),
        "tuning": patch["tuning"],
        "evidence": patch["evidence"],
        "gate_eo_change": _eo_change_interval(patch),
        "patch_ref": _patch_ref(patch),
        "rows": rows,
    }


def _patch_ref(patch: dict[str, Any]) -> dict[str, Any]:
    """What a replay needs of a job's patch: its registry name, version and α."""
    return {"name": patch["name"], "version": patch["version"], "alpha": patch["alpha"]}


def _scored(
    task: Task, cf: CounterfactualTest, pool_probs: np.ndarray, log: bool = False
) -> dict[str, Any]:
    """A row's metrics on the test rows of the pool's answers, and its counterfactual bias."""
    row = _metrics(task, pool_probs[: len(task.test)])
    row["cf_bias"] = cf.bias(pool_probs, log=log)
    return row


def _cf_average(gw: Gateway, run: Run, first: Served, cf: CounterfactualTest) -> dict[str, Any]:
    """The black box's answers averaged over the attribute's values (k upstream calls per
    decision). Its counterfactual bias is measured: the answers for x̄ are averaged from a
    second pass of upstream calls, independent of the first."""
    task, n = run.task, len(run.task.test)
    second = gw.predict(run.gateway_model, task.classes, cf.pool(task.test).X)
    on_x, on_cf = cf.averaged(first.raw), cf.averaged(second.raw)
    row = _metrics(task, on_x[:n])
    row["cf_bias"] = cf.bias(on_x, cf_pool=on_cf)
    row["upstream_calls_per_decision"] = cf.k
    return row


def _eo_change_interval(patch: dict[str, Any]) -> list[float] | None:
    """The job's interval for the EO change (fair − raw, points) on its verdict rows."""
    evidence = patch.get("evidence")
    if evidence is None:
        return None
    change = evidence["change"]["eo_bias"]
    return [change["low"], change["high"]]


def _agreement(candidate: np.ndarray, served: np.ndarray) -> float:
    """Share (%) of decisions (test rows and their counterfactuals) on which the offline replay
    of a served patch agrees with the gateway: a check that ``candidate`` computes what serving
    computes."""
    return round(100 * float(np.mean(candidate.argmax(axis=1) == served.argmax(axis=1))), 3)


def _metrics(task: Task, probs: np.ndarray) -> dict[str, Any]:
    return row_metrics(task.test.y, np.argmax(probs, axis=1), task.test.b)


def _at_alpha_one(gw: Gateway, run: Run, first: Served, cf: CounterfactualTest) -> dict[str, Any]:
    """Re-weight the served patch to the paper's α = 1 (a new stack revision, hot-loaded)."""
    model, task = run.gateway_model, run.task
    gw.wait_served(model, gw.set_alpha(model, 1.0))
    second = gw.predict(model, task.classes, cf.pool(task.test).X)
    if not np.allclose(second.raw, first.raw, atol=1e-6):
        raise RuntimeError(f"{model}: the black box answered differently on the same inputs")
    return _scored(task, cf, second.fair)


def _peers(
    gw: Gateway, run: Run, test: Served, cf: CounterfactualTest | None = None
) -> dict[str, np.ndarray]:
    """Every peer's decisions, fitted on the black box's answers for the job's own
    calibration rows (asked through the same gateway): on the test rows, or with ``cf`` on
    the whole pool. The counterfactual rows are a second call with the same seed (refitted,
    deterministically), so row i of both draws the same random numbers: a randomised peer's
    flips then come from the attribute, not from its coin (``counterfactual``)."""
    if len(run.task.classes) != 2:
        return {}
    calib, n = run.calib, len(run.task.test)
    answers = gw.predict(run.gateway_model, run.task.classes, calib.X)
    own = peer_decisions(calib, answers.raw, run.task.test, test.raw[:n], run.seed)
    if cf is None or not len(cf.queries):
        return own
    flipped = peer_decisions(calib, answers.raw, cf.queries, test.raw[n:], run.seed)
    return {peer: np.concatenate([own[peer], flipped[peer]]) for peer in own}


def evaluate_outer(gw: Gateway, run: Run, status_url: str) -> dict[str, Any]:
    """One outer fold: every method's decision on each of its test rows, kept for pooling
    (``outer_cv``), not summarised here."""
    job = wait_for_job(lambda: gw.job(status_url), timeout_s=1800, poll_s=0.2)
    patch = job["result"]["patches"][0]
    task = run.task
    if (revision := job["result"]["stack_revision"]) is not None:
        gw.wait_served(run.gateway_model, revision)
    served = gw.predict(run.gateway_model, task.classes, task.test.X)
    candidate = candidate_probs(patch, run.model_config(), task.test.X, served.raw, PREFIX)
    pred = {
        "raw": np.argmax(served.raw, axis=1),
        "eraser_tuned": np.argmax(served.fair, axis=1),
        "candidate": np.argmax(candidate, axis=1),
        **_peers(gw, run, served),
    }
    return {
        "setting": run.setting,
        "seed": run.seed,
        "fold": run.fold,
        "status": patch["status"],
        "alpha": patch["alpha"],
        "pooled_rows": task.notes["pooled_rows"],
        "test_rows": task.notes["test_rows"],
        "y": task.test.y,
        "b": task.test.b,
        "pred": pred,
    }


# --- label-free rows: the Poisoner's jobs (method "poisoner") -------------------------------

# One job per row, each on its own gateway model (the deployed model's, renamed like the small
# calibration set's), with the spec's ``poisoner`` knobs below. One candidate per job, so no row
# gets the job's choice between two: ``poisoner`` serves the tempered log f_B, ``poisoner_eraser``
# the Eraser on f_B's predicted class, and ``gce`` is ``poisoner_eraser`` with an f_B trained by
# generalized cross-entropy instead of guided poisoning (the ablation: the same serving mode, so
# the only difference is how f_B was trained; the pseudo-bias Eraser depends on f_B only
# through b̂, i.e. through how well f_B found the bias).
LABEL_FREE_SPECS: dict[str, dict[str, Any]] = {
    "poisoner": {"candidates": ["poisoner"]},
    "poisoner_eraser": {"candidates": ["poisoner-eraser"]},
    "gce": {"candidates": ["poisoner-eraser"], "loss": "gce"},
}
LABEL_FREE_ROWS = tuple(LABEL_FREE_SPECS)


@dataclass(frozen=True)
class LabelFreeRun(Run):
    """A label-free job on the vanilla deployed model with the full calibration set. The bias
    column is uploaded and named in the spec for evaluation only: the job trains on x and y,
    and its α rule and gate use the true groups (the label-free gate over pseudo-groups y × b̂
    is the jobs' own tests' business)."""

    row: str = "poisoner"

    @property
    def gateway_model(self) -> str:
        return f"{self.deployed}-{self.row.replace('_', '-')}"

    def spec_fields(self) -> dict[str, Any]:
        return {"method": "poisoner", "poisoner": LABEL_FREE_SPECS[self.row]}


def plan_label_free(runs: list[Run], rows: tuple[str, ...] = LABEL_FREE_ROWS) -> list[LabelFreeRun]:
    """The label-free jobs for the planned runs' vanilla models (full calibration set)."""
    return [
        LabelFreeRun(r.setting, r.variant, r.calibration, r.seed, r.task, r.fold, row)
        for r in runs
        if r.variant == "vanilla" and r.calibration == "full" and r.fold is None
        for row in rows
    ]


def evaluate_label_free(gw: Gateway, run: LabelFreeRun, status_url: str) -> dict[str, Any]:
    """The served patch (``POST /predict``) and the job's patch replayed offline (served or
    not) on the test split, the gate's verdict and the report's bias-discovery figures."""
    job = wait_for_job(lambda: gw.job(status_url), timeout_s=1800, poll_s=0.2)
    result = job["result"]
    patch = result["patches"][0]
    task, model = run.task, run.gateway_model
    if (revision := result["stack_revision"]) is not None:
        gw.wait_served(model, revision)
    cf = counterfactual_test(task)
    pool = cf.pool(task.test)
    served = gw.predict(model, task.classes, pool.X)
    candidate = candidate_probs(patch, run.model_config(), pool.X, served.raw, PREFIX)
    rows = {
        "raw": _scored(task, cf, served.raw),
        run.row: _scored(task, cf, served.fair),  # the raw model's where the gate rejected
        f"{run.row}_candidate": _scored(task, cf, candidate, log=True),
    }
    if patch["activated"]:
        rows[f"{run.row}_candidate"]["agreement"] = _agreement(candidate, served.fair)
    report = gw.report(patch["name"], patch["version"])
    label_free = report.get("label_free", {})
    discovery = label_free.get("bias_discovery", {})
    return {
        "setting": run.setting,
        "variant": run.variant,
        "calibration": run.calibration,
        "seed": run.seed,
        "row": run.row,
        "spec": run.spec_fields(),
        "calibration_rows": len(run.calib),
        "kind": patch.get("kind"),
        "groups": patch.get("groups"),
        "alpha": patch["alpha"],
        "status": patch["status"],
        "reason": patch["reason"],
        "activated": patch["activated"],
        "job_s": round(sum(result["timings_s"].values()), 2),
        "timings_s": result["timings_s"],
        "verdict": {
            "rows": patch["evidence"]["rows"],
            **{
                f"{m}_change": [round(change[m][k], 2) for k in ("estimate", "low", "high")]
                for m in ("eo_bias", "accuracy", "avg_group_acc", "worst_group_acc")
                if m in (change := patch["evidence"]["change"])
            },
        },
        "temperatures": label_free.get("biased_model", {}).get("temperatures"),
        "bias_discovery": {
            part: {k: v for k, v in values.items() if k != "mapping"}
            for part, values in discovery.items()
            if isinstance(values, dict)
        },
        "rows": rows,
    }


def evaluate_retrain(run: Run, cache: Path | None) -> dict[str, Any]:
    """The ``poisoner_retrain`` laboratory row: the deployed architecture retrained on its own
    training split the Poisoner's way (``poisoner_retrain``), test decisions computed here."""
    from bench.quality.poisoner_retrain import ROW, retrain_decisions

    pred, info = retrain_decisions(run.task, run.seed, cache)
    test = run.task.test
    row = row_metrics(test.y, pred, test.b)
    row["laboratory"] = True
    plain = row_metrics(test.y, info.pop("without_gifl_pred"), test.b)
    info["without_gifl"] = {
        m: round(float(plain[m]), 2) for m in ("avg", "worst", "eo", "accuracy")
    }
    return {
        "setting": run.setting,
        "variant": run.variant,
        "calibration": "training split",
        "calibration_rows": None,  # no calibration set: the deployed model's training rows
        "seed": run.seed,
        "row": ROW,
        **info,
        "rows": {ROW: row},
    }


# --- FMD rows: counterfactual unlearning (method "fmd"), alone and stacked on the Eraser ------


@dataclass(frozen=True)
class FmdRun(Run):
    """An FMD job (``method: "fmd"``) on the vanilla deployed model with the full calibration
    set, on its own gateway model. On COMPAS and Adult the attribute is the model's input
    column (``african_american``, ``sex_male``), so the upload has no separate bias column; on
    Colored MNIST the upload keeps its colour column and brings recoloured digits as pairs."""

    @property
    def gateway_model(self) -> str:
        return f"{self.deployed}-fmd"

    @property
    def attribute(self) -> str:
        if self.uploads_pairs:
            return self.task.bias_name
        return INPUT_ATTRIBUTES[self.task.dataset][0]

    @property
    def uploads_pairs(self) -> bool:
        """Colored MNIST: the colour is no input, so the job gets recoloured digits as pairs."""
        return self.setting in FMD_PAIRED_SETTINGS

    def spec_fields(self) -> dict[str, Any]:
        return {"method": "fmd", "bias": [self.attribute]}


FMD_SETTINGS = tuple(INPUT_ATTRIBUTES)
# Colored MNIST with uploaded pairs: the ρ = 0.9 setting only (uniform calibration colours, so
# every digit has calibration rows in other colours; the ρ = 0.99 calibration set holds about
# 7 colour-conflicting digits, and each FMD job on the CNN costs minutes on 2 cores).
FMD_PAIRED_SETTINGS = ("cmnist_rho90",)


def plan_fmd(runs: list[Run]) -> list[FmdRun]:
    """The FMD jobs for the planned runs' vanilla models (full calibration set) on the
    settings whose attribute is an input column."""
    return [
        FmdRun(r.setting, r.variant, r.calibration, r.seed, r.task, r.fold)
        for r in runs
        if r.variant == "vanilla" and r.calibration == "full" and r.fold is None
        and (r.task.dataset in FMD_SETTINGS or r.setting in FMD_PAIRED_SETTINGS)
    ]  # fmt: skip


def evaluate_fmd(
    gw: Gateway, run: FmdRun, status_url: str, eraser: dict[str, Any] | None
) -> dict[str, Any]:
    """The served FMD patch (``POST /predict``), the job's patch replayed (served or not), and
    with ``eraser`` (the same seed's Eraser job's ``patch_ref``) both patches stacked by Eq. 21
    and replayed from the signed registry blobs, each at its job's α; every row with its
    counterfactual bias. Also the job's own counterfactual-bias figures on its verdict rows."""
    job = wait_for_job(lambda: gw.job(status_url), timeout_s=1800, poll_s=0.2)
    result = job["result"]
    patch = result["patches"][0]
    task, model, config = run.task, run.gateway_model, run.model_config()
    if (revision := result["stack_revision"]) is not None:
        gw.wait_served(model, revision)
    cf = counterfactual_test(task)
    pool = cf.pool(task.test)
    served = gw.predict(model, task.classes, pool.X)
    candidate = candidate_probs(patch, config, pool.X, served.raw, PREFIX)
    rows = {
        "raw": _scored(task, cf, served.raw),
        "fmd": _scored(task, cf, served.fair),  # the raw model's where the gate rejected
        "fmd_candidate": _scored(task, cf, candidate, log=True),
    }
    if patch["activated"]:
        rows["fmd_candidate"]["agreement"] = _agreement(candidate, served.fair)
    if eraser is not None:
        stack = [eraser, _patch_ref(patch)]
        stacked = candidate_stack_probs(stack, config, pool.X, served.raw, PREFIX)
        rows["eraser+fmd"] = _scored(task, cf, stacked, log=True)
        alone = candidate_probs(eraser, config, pool.X, served.raw, PREFIX)
        rows["eraser_candidate"] = _scored(task, cf, alone, log=True)
    return {
        "setting": run.setting,
        "variant": run.variant,
        "calibration": run.calibration,
        "seed": run.seed,
        "row": "fmd",
        "attribute": run.attribute,
        "calibration_rows": len(run.calib),
        "alpha": patch["alpha"],
        "status": patch["status"],
        "reason": patch["reason"],
        "activated": patch["activated"],
        "job_s": round(sum(result["timings_s"].values()), 2),
        "verdict_counterfactual_bias": patch.get("counterfactual_bias"),
        "patch_ref": _patch_ref(patch),
        "eraser_patch": eraser,
        "rows": rows,
    }
