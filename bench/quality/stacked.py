"""Stacked attributes (paper Eq. 21): one patch per protected attribute on the same model.

The gateway serves ``softmax(log p(y|x) − Σ α_i log G_i(x))``; a job whose spec lists two bias
columns trains one patch per column; with ``activate`` it now stacks only the best validated
one (the patches are judged alone, never as a stack), so the stack itself is measured by
replaying the job's patches together (``candidate``). The question here: is the stack no worse
on either attribute than the patch for that attribute alone? Per (setting, seed), three
gateway models share one deployed model (``{setting}-vanilla-s{seed}``): ``-stack-a`` (the
benchmark's bias column only), ``-stack-b`` (the second attribute only) and ``-stack-ab``
(both). Each gets its own job on the
same full calibration set, and every test decision comes from ``POST /predict``.

The second attributes: COMPAS sex (the ``sex`` input, 1 = Male), uploaded as ``sex_group`` since
the gateway refuses a bias column that is also one of the model's features; Adult race as
White / non-White from the ``race=…`` one-hot inputs (the full five categories leave calibration
cells of 6 rows — Amer-Indian-Eskimo and Other with income > 50K — so about 2 verdict rows).

Comparisons are paired: on each seed's test rows, raw, both single patches and the stack are
resampled together within the (target, attribute a, attribute b) cells — a refinement of the
(target, attribute) cells that also keeps every intersectional group's size fixed, so the worst
group is defined in every draw — and the seed-mean difference gets the gate's basic bootstrap
interval (``patch_training.bootstrap``, as ``outer_cv.paired`` does for methods).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orjson

from bench.quality.candidate import candidate_stack_probs
from bench.quality.client import ADMIN, Gateway
from bench.quality.datasets import Table, Task
from bench.quality.outer_cv import DRAWS, mean_over_seeds, seed_mean_difference
from bench.quality.protocol import SETTINGS
from bench.quality.system import PREFIX, GatewayModel, model_entry
from deploy.local.jobs import wait_for_job
from patch_training.bootstrap import Cells, metrics_of, resampled_accuracies
from patch_training.metrics import group_report
from service.settings import ModelConfig

Which = Literal["a", "b", "ab"]
WHICH: tuple[Which, ...] = ("a", "b", "ab")
METHODS = ("raw", "a", "b", "ab")  # what each table row served: raw, one patch, the stack
# (benchmark's bias column, second attribute's upload column) per setting
ATTRIBUTES: dict[str, tuple[str, str]] = {"compas": ("race", "sex_group"), "adult": ("sex", "race")}
LABELS = {"race": "race", "sex": "sex", "sex_group": "sex"}  # what the report calls a column
TITLES = {"compas": "COMPAS", "adult": "Adult"}
SECOND = {  # how the report describes each setting's second attribute
    "compas": "Sex is the model's own `sex` input (1 = Male)",
    "adult": "Race is White vs non-White, from the model's one-hot `race=…` inputs (the five "
    "categories would leave (target, race) calibration cells too small for the gate)",
}
ADULT_WHITE = "race=White"
TARGET = "the stack is no worse on either attribute than the patch for that attribute alone"
SOURCES = ("served", "candidate")  # what the gateway served; the job's patches replayed
# (patches, model, x, raw probabilities) → fair log-probabilities of those patches stacked
Replay = Callable[[list[dict[str, Any]], ModelConfig, np.ndarray, np.ndarray], np.ndarray]


def replay_from_registry(
    patches: list[dict[str, Any]], model: ModelConfig, x: np.ndarray, raw: np.ndarray
) -> np.ndarray:
    """The job's patches as the gateway would stack them, read from the benchmark's registry."""
    return candidate_stack_probs(patches, model, x, raw, PREFIX)


# --- the second attribute -------------------------------------------------------------------


def attribute_names(setting: str) -> tuple[str, str]:
    """The two bias columns of a setting's uploads: the benchmark's own, then the second."""
    if setting not in ATTRIBUTES:
        raise ValueError(f"stacked attributes cover {list(ATTRIBUTES)}, not {setting!r}")
    return ATTRIBUTES[setting]


def second_attribute(task: Task, table: Table) -> np.ndarray:
    """The second protected attribute of each row of ``table``, as strings. Read from the
    model's own inputs, so it needs no data beyond what a client sends."""
    if task.dataset == "compas":
        return _compas_sex(task, table)
    if task.dataset == "adult":
        return _adult_race(task, table)
    raise ValueError(f"no second attribute for {task.dataset!r}")


def _column(task: Task, table: Table, name: str) -> np.ndarray:
    if task.feature_names is None or name not in task.feature_names:
        raise ValueError(f"{task.dataset}: no input column {name!r}")
    return table.X[:, task.feature_names.index(name)]


def _compas_sex(task: Task, table: Table) -> np.ndarray:
    """``sex`` is 1 = Male, 0 = Female (blackbox/data/README.md, ``vendor_compas``)."""
    sex = _column(task, table, "sex")
    if not np.isin(sex, (0.0, 1.0)).all():
        raise ValueError("COMPAS sex column holds values other than 0/1")
    return np.where(sex == 1.0, "Male", "Female")


def _adult_race(task: Task, table: Table) -> np.ndarray:
    """White or non-White from the one-hot race block. A row with no bit set (a category the
    training split lacked) is not White."""
    names = task.feature_names or []
    block = table.X[:, [i for i, n in enumerate(names) if n.startswith("race=")]]
    if not np.isin(block, (0.0, 1.0)).all() or (block.sum(axis=1) > 1).any():
        raise ValueError("Adult race inputs are not one-hot")
    return np.where(_column(task, table, ADULT_WHITE) == 1.0, "White", "non-White")


def attribute_values(setting: str, task: Task, table: Table) -> dict[str, np.ndarray]:
    """Both attributes of ``table``'s rows, by upload column name."""
    a, b = attribute_names(setting)
    if task.bias_name != a:
        raise ValueError(f"{setting}: the task's bias is {task.bias_name!r}, expected {a!r}")
    return {a: np.asarray(table.b).astype(str), b: second_attribute(task, table)}


# --- runs -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class StackRun:
    setting: str
    seed: int
    task: Task
    which: Which

    @property
    def deployed(self) -> str:
        """The benchmark's vanilla deployed model for this seed (already served)."""
        return f"{self.setting}-vanilla-s{self.seed}"

    @property
    def gateway_model(self) -> str:
        return f"{self.deployed}-stack-{self.which}"

    @property
    def bias(self) -> list[str]:
        """The job's bias columns: one patch each."""
        a, b = attribute_names(self.setting)
        return {"a": [a], "b": [b], "ab": [a, b]}[self.which]

    def model(self) -> GatewayModel:
        t = self.task
        return GatewayModel(
            self.gateway_model, self.deployed, t.classes, t.input_shape, t.feature_names
        )

    def model_config(self) -> ModelConfig:
        """The gateway's view of the model (the upstream URL is not used offline)."""
        return ModelConfig.model_validate(model_entry(self.model(), "http://127.0.0.1:9"))


def plan_stacked(settings: list[str], seeds: list[int], data_dir: Path) -> list[StackRun]:
    """Three runs per (tabular setting, seed), seeds outermost like ``protocol.plan``."""
    runs = []
    for seed in seeds:
        for key in settings:
            if key not in ATTRIBUTES:
                continue
            task = SETTINGS[key].make_task(seed, data_dir)
            runs += [StackRun(key, seed, task, which) for which in WHICH]
    return runs


# --- through the gateway --------------------------------------------------------------------


def calibration_csv(
    task: Task, table: Table, columns: Mapping[str, np.ndarray]
) -> tuple[str, bytes]:
    """``client.calibration_file`` with any bias columns: the gateway wants exactly the
    features, the target and the spec's bias columns, so each job's file names only its own."""
    labels = np.array(task.classes)[table.y]
    if task.feature_names is None:
        raise ValueError(f"{task.dataset}: stacked attributes need a tabular model")
    for name, values in columns.items():
        if len(values) != len(table) or any("," in str(v) for v in np.unique(values)):
            raise ValueError(f"column {name!r}: wrong length, or a value with a comma")
    out = [",".join([*task.feature_names, task.target_name, *columns])]
    for i, (row, label) in enumerate(zip(table.X, labels, strict=True)):
        out.append(
            ",".join([*(f"{v:g}" for v in row), label, *(str(v[i]) for v in columns.values())])
        )
    return f"{task.dataset}.csv", ("\n".join(out) + "\n").encode()


def stack_calibration(run: StackRun) -> tuple[str, bytes]:
    """The run's upload: the full calibration set with its job's attribute column(s)."""
    values = attribute_values(run.setting, run.task, run.task.calib)
    return calibration_csv(run.task, run.task.calib, {c: values[c] for c in run.bias})


def submit_stacked(gw: Gateway, run: StackRun) -> str:
    """Queue the run's job (activated if the gate passes); its status URL."""
    spec = {
        "model": run.gateway_model,
        "target": run.task.target_name,
        "bias": run.bias,
        "seed": run.seed,
        "activate": True,
    }
    r = gw.http.post(
        "/patches",
        headers=ADMIN,
        data={"spec": orjson.dumps(spec).decode()},
        files={"calibration": stack_calibration(run)},
    )
    if r.status_code >= 400:
        raise RuntimeError(f"POST /patches ({run.gateway_model}) -> {r.status_code}: {r.text}")
    return r.json()["status_url"]


def evaluate_stacked(
    gw: Gateway, run: StackRun, status_url: str, replay: Replay = replay_from_registry
) -> dict[str, Any]:
    """The served decisions on the test split once the job's stack is live (raw when the gate
    rejected every patch), and the job's patches replayed as the stack they would make
    whatever the gate said (``candidate``), with y, both attributes and each patch's verdict."""
    job = wait_for_job(lambda: gw.job(status_url), timeout_s=1800, poll_s=0.2)
    task = run.task
    if (revision := job["result"]["stack_revision"]) is not None:
        gw.wait_served(run.gateway_model, revision)
    served = gw.predict(run.gateway_model, task.classes, task.test.X)
    result = job["result"]["patches"]
    candidate = replay(result, run.model_config(), task.test.X, served.raw)
    patches = [
        {k: p[k] for k in ("bias", "status", "alpha", "activated", "reason")} for p in result
    ]
    return {
        "setting": run.setting,
        "seed": run.seed,
        "which": run.which,
        "bias": run.bias,
        "patches": patches,
        "served_revision": served.revision,
        "y": task.test.y,
        "attributes": attribute_values(run.setting, task, task.test),
        "raw": np.argmax(served.raw, axis=1),
        "fair": np.argmax(served.fair, axis=1),
        "candidate": np.argmax(candidate, axis=1),
    }


# --- summary --------------------------------------------------------------------------------


def stacked_summary(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``{setting: block}`` from ``evaluate_stacked``'s records (setting × seed × which)."""
    by_setting: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        by_setting[record["setting"]].append(record)
    return {setting: _block(setting, runs) for setting, runs in by_setting.items()}


def seed_data(runs: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Per seed: y, both attributes and every method's decisions on the same test rows, as
    served and as replayed (``pred[source][method]``). The three runs must have scored the
    same rows, and the black box must have answered alike."""
    seeds: dict[int, dict[str, Any]] = {}
    for seed in sorted({r["seed"] for r in runs}):
        own = {r["which"]: r for r in runs if r["seed"] == seed}
        if sorted(own) != sorted(WHICH) or sum(r["seed"] == seed for r in runs) != len(WHICH):
            raise ValueError(f"seed {seed}: need exactly one run each of {WHICH}")
        first = own["a"]
        for r in own.values():
            same = np.array_equal(r["y"], first["y"]) and np.array_equal(r["raw"], first["raw"])
            same = same and all(
                np.array_equal(r["attributes"][c], v) for c, v in first["attributes"].items()
            )
            if not same:
                raise ValueError(f"seed {seed}: the runs' test rows or raw decisions differ")
        raw = np.asarray(first["raw"])
        pred = {
            source: {"raw": raw, **{w: np.asarray(own[w][key]) for w in WHICH}}
            for source, key in (("served", "fair"), ("candidate", "candidate"))
        }
        seeds[seed] = {
            "y": np.asarray(first["y"]),
            "attributes": first["attributes"],
            "pred": pred,
            "patches": {w: own[w]["patches"] for w in WHICH},
        }
    return seeds


def _joint(attributes: Mapping[str, np.ndarray]) -> np.ndarray:
    """The intersectional group of each row (attribute a × attribute b)."""
    a, b = (np.asarray(v).astype(str) for v in attributes.values())
    return np.char.add(np.char.add(a, " × "), b)


def _block(setting: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    a, b = attribute_names(setting)
    seeds = seed_data(runs)
    first = next(iter(seeds.values()))
    joint_sizes = Cells.of(first["y"], _joint(first["attributes"])).sizes
    compared = {source: _compared(seeds, (a, b), source) for source in SOURCES}
    return {
        "attributes": [a, b],
        "labels": {c: LABELS[c] for c in (a, b)},
        "seeds": list(seeds),
        "test_rows": len(first["y"]),
        "groups": len(joint_sizes),
        "smallest_group": int(joint_sizes.min()),
        "validated": _validated(seeds, (a, b)),
        "patches": {w: {str(k): s["patches"][w] for k, s in seeds.items()} for w in WHICH},
        **compared["served"],
        "candidate": compared["candidate"],
        "target": {
            "name": TARGET,
            "met": _met(compared["served"]["paired"]),
            "stacks_served": _stacks_served(seeds),
            "met_candidates": _met(compared["candidate"]["paired"]),
        },
    }


def _compared(
    seeds: dict[int, dict[str, Any]], columns: tuple[str, str], source: str
) -> dict[str, Any]:
    """Every method's seed-mean figures and the stack's paired comparisons, from one source of
    decisions (served, or the job's patches replayed)."""
    per_seed = {m: [_metrics(s, m, columns, source) for s in seeds.values()] for m in METHODS}
    return {
        "methods": {m: mean_over_seeds(rows, rows[0]) for m, rows in per_seed.items()},
        "paired": _paired(seeds, columns, source),
    }


def _met(paired: dict[str, Any]) -> bool:
    return all(p["verdict"] == "no worse" for p in paired.values())


def _stacks_served(seeds: dict[int, dict[str, Any]]) -> int:
    """Seeds in which the gate let both patches of the stack serve: where it did not, the
    "stack" row is one patch or none, and the target says nothing about stacking."""
    return sum(
        len(s["patches"]["ab"]) == 2 and all(p["activated"] for p in s["patches"]["ab"])
        for s in seeds.values()
    )


def _metrics(
    data: dict[str, Any], method: str, columns: tuple[str, str], source: str = "served"
) -> dict[str, float]:
    """EO bias per attribute, and the group accuracies over the intersectional groups
    (attribute a × attribute b × target), in points."""
    y, pred, attrs = data["y"], data["pred"][source][method], data["attributes"]
    joint = group_report(y, pred, _joint(attrs))
    out = {f"eo_{c}": 100 * group_report(y, pred, attrs[c]).eo_bias for c in columns}
    return out | {"worst": 100 * joint.worst_group_acc, "accuracy": 100 * joint.accuracy}


def _validated(seeds: dict[int, dict[str, Any]], columns: tuple[str, str]) -> dict[str, Any]:
    """Seeds whose job validated each attribute's patch, per run: ``{which: {column: n}}``."""
    return {
        w: {
            c: sum(
                any(p["bias"] == c and p["status"] == "validated" for p in s["patches"][w])
                for s in seeds.values()
            )
            for c in columns
            if c in {p["bias"] for s in seeds.values() for p in s["patches"][w]}
        }
        for w in WHICH
    }


# --- paired comparisons ---------------------------------------------------------------------


def _pooling(cells: Cells, labels: np.ndarray, y: np.ndarray) -> tuple[Cells, np.ndarray]:
    """The (target, attribute) cells and the matrix [C_joint, C_attr] turning the joint cells'
    accuracies into theirs (size-weighted: stratified resampling keeps sizes fixed)."""
    coarse = Cells.of(y, labels)
    index = {
        (int(k), str(labels[rows[0]])): i
        for i, (k, rows) in enumerate(zip(coarse.classes, coarse.members, strict=True))
    }
    weights = np.zeros((len(cells.members), len(coarse.members)))
    for c, rows in enumerate(cells.members):
        k = index[(int(cells.classes[c]), str(labels[rows[0]]))]
        weights[c, k] = len(rows) / coarse.sizes[k]
    return coarse, weights


def _paired(
    seeds: dict[int, dict[str, Any]], columns: tuple[str, str], source: str = "served"
) -> dict[str, Any]:
    """Per attribute: the stack minus that attribute's patch alone (EO bias on the attribute,
    worst intersectional group), seed-mean, with its paired interval and verdict."""
    point: dict[str, dict[str, list]] = {m: defaultdict(list) for m in METHODS}
    draws: dict[str, dict[str, list]] = {m: defaultdict(list) for m in METHODS}
    for seed, data in seeds.items():
        y, attrs = data["y"], data["attributes"]
        cells = Cells.of(y, _joint(attrs))
        correct = {m: data["pred"][source][m] == y for m in METHODS}
        resampled = resampled_accuracies(cells, correct, DRAWS, seed)  # all four together
        pools = {c: _pooling(cells, np.asarray(attrs[c]).astype(str), y) for c in columns}
        for m in METHODS:
            observed = np.array([np.mean(correct[m][rows]) for rows in cells.members])
            for acc, store in ((observed, point), (resampled[m], draws)):
                store[m]["worst"].append(metrics_of(acc, cells)["worst_group_acc"])
                for c, (coarse, weights) in pools.items():
                    store[m][f"eo_{c}"].append(metrics_of(acc @ weights, coarse)["eo_bias"])
    out = {}
    for c, alone in zip(columns, ("a", "b"), strict=True):
        checks = {
            "eo": _verdict(point, draws, f"eo_{c}", alone, higher_is_better=False),
            "worst": _verdict(point, draws, "worst", alone, higher_is_better=True),
        }
        worse = any(v["verdict"] == "worse" for v in checks.values())
        out[c] = {"against": alone, **checks, "verdict": "worse" if worse else "no worse"}
    return out


def _verdict(
    point: dict, draws: dict, metric: str, alone: str, higher_is_better: bool
) -> dict[str, Any]:
    """Stack minus ``alone`` in points; "worse" only when the interval's worse-side bound is
    beyond no difference (the stack is resolved as worse), otherwise "no worse"."""
    iv = seed_mean_difference(point, draws, "ab", alone, metric)
    worse = iv.high < 0 if higher_is_better else iv.low > 0
    return {
        "estimate": iv.estimate,
        "low": iv.low,
        "high": iv.high,
        "verdict": "worse" if worse else "no worse",
    }


# --- markdown -------------------------------------------------------------------------------


def stacked_markdown(block: dict[str, Any]) -> list[str]:
    """BENCHMARKS.md's stacked-attributes part, from ``stacked_summary``'s output."""
    if not block:
        return []
    lines = [
        "### Stacked attributes (Eq. 21): one patch per protected attribute",
        "",
        "Per seed, three gateway models share the vanilla deployed model and the full "
        "calibration set: one job with a patch for the benchmark's bias attribute, one with a "
        "patch for a second attribute, one with both columns (two patches; a job stacks at most "
        "one of them, so the stack itself is in the replayed table). Rows: what each served on the "
        "test split (a patch the gate rejected is not served, so its model answers raw). "
        "EO bias is per attribute; worst group is over the "
        "intersectional groups (attribute × attribute × target). Figures are means over seeds, "
        "in points. Paired comparisons: the stack minus the patch for that attribute alone, on "
        "the same rows, with a 90 % interval from a paired bootstrap within (target, attribute "
        "× attribute) cells; a metric is *worse* only where its interval resolves the stack as "
        "worse, and an attribute's verdict is *worse* when either of its metrics is.",
        "",
    ]
    for setting, b in block.items():
        lines += _setting_lines(setting, b)
    return lines


def _setting_lines(setting: str, b: dict[str, Any]) -> list[str]:
    a_col, b_col = b["attributes"]
    name = {c: b["labels"][c] for c in (a_col, b_col)}
    rows = {
        "raw": "raw (deployed model)",
        "a": f"{name[a_col]} patch alone",
        "b": f"{name[b_col]} patch alone",
        "ab": f"stack ({name[a_col]} + {name[b_col]})",
    }
    seeds = len(b["seeds"])
    valid = "; ".join(
        f"{rows[w]}: " + ", ".join(f"{name[c]} {n}/{seeds}" for c, n in b["validated"][w].items())
        for w in WHICH
    )
    lines = [
        f"#### {TITLES.get(setting, setting)}: {name[a_col]} + {name[b_col]}, {b['test_rows']} "
        f"test rows, seeds {', '.join(map(str, b['seeds']))}",
        "",
        f"{SECOND.get(setting, setting)}. "
        f"Patches validated by the gate — {valid}. Intersectional groups: {b['groups']}, the "
        f"smallest with {b['smallest_group']} test rows.",
        "",
        *_figures(b, rows, name, "served"),
    ]
    target = b["target"]
    met = "met" if target["met"] else "**missed**"
    served = target.get("stacks_served")
    if served == 0:
        met += " — untested: in no seed did the gate validate both patches, so no stack served"
    elif served is not None:
        met += f" (both patches served in {served} of {len(b['seeds'])} seeds)"
    lines += ["", f"Target, as served: {target['name']}: {met}.", ""]
    if "candidate" not in b:
        return lines
    lines += [
        "The jobs' patches replayed (read back from the registry and run as the gateway runs "
        "them, each at its job's α, whatever the gate said): the same comparison for the stack "
        "each two-column job would have activated.",
        "",
        *_figures(b["candidate"], rows, name, "replayed"),
    ]
    replayed = "met" if target.get("met_candidates") else "**missed**"
    return [*lines, "", f"Target, replayed stacks: {replayed}.", ""]


def _figures(
    b: dict[str, Any], rows: dict[str, str], name: dict[str, str], source: str
) -> list[str]:
    """One source's figures table and its paired comparisons."""
    a_col, b_col = name
    lines = [
        f"| {source} | EO bias ({name[a_col]}) | EO bias ({name[b_col]}) | worst group "
        "| accuracy |",
        "|---|---:|---:|---:|---:|",
    ]
    for m in METHODS:
        r = b["methods"][m]
        cells = [f"{r[k]:.2f}" for k in (f"eo_{a_col}", f"eo_{b_col}", "worst", "accuracy")]
        lines.append(f"| {rows[m]} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Stack minus the patch for that attribute alone, {source} (points, 90 % paired interval):",
        "",
        "| attribute | EO bias (that attribute) | worst group | verdict |",
        "|---|---|---|---|",
    ]
    for c, p in b["paired"].items():
        lines.append(
            f"| {name[c]} | {_paired_cell(p['eo'])} | {_paired_cell(p['worst'])} | {p['verdict']} |"
        )
    return lines


def _paired_cell(p: dict[str, Any]) -> str:
    flag = " *worse*" if p["verdict"] == "worse" else ""
    return f"{p['estimate']:+.2f} [{p['low']:+.2f}, {p['high']:+.2f}]{flag}"
