"""`make bench-quality`: how well the running product debiases real deployed models.

The paper's protocol (Sec. V) through the real system: deployed models are trained here and
served by a separate black-box process, patches come from training jobs that query it, and
predictions from the gateway's HTTP API. ``--quick`` (one seed, COMPAS only) is the CI check;
it writes under ``.cache/`` and leaves the committed results alone.
"""

from __future__ import annotations

import argparse
import datetime
import os
import pickle
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from tqdm import tqdm

from bench.quality.audit_rows import AuditRun, evaluate_audit, plan_audits, submit_audit
from bench.quality.client import Gateway
from bench.quality.counterfactual import calibration_pairs
from bench.quality.datasets import DATA_DIR
from bench.quality.deployed import deployed_onnx
from bench.quality.gate_stats import gate_stats
from bench.quality.markdown import plot_paths, write_markdown
from bench.quality.outer_cv import outer_summary
from bench.quality.plots import plot_setting
from bench.quality.poisoner_retrain import supported as retrain_supported
from bench.quality.protocol import (
    LABEL_FREE_ROWS,
    SETTINGS,
    FmdRun,
    LabelFreeRun,
    Run,
    evaluate,
    evaluate_fmd,
    evaluate_label_free,
    evaluate_outer,
    evaluate_retrain,
    plan,
    plan_fmd,
    plan_label_free,
    plan_outer,
)
from bench.quality.results import (
    aggregate,
    aggregate_fmd,
    aggregate_label_free,
    fmd_targets,
    for_json,
    label_free_targets,
    merge_rows,
    targets,
)
from bench.quality.stacked import (
    StackRun,
    evaluate_stacked,
    plan_stacked,
    stacked_summary,
    submit_stacked,
)
from bench.quality.system import RUN_DIR, running_system
from blackbox.onnx_model import write_onnx_model
from deploy.local.processes import ROOT

RESULTS = ROOT / "bench" / "results"
QUICK_LABEL_FREE = ("poisoner_eraser",)  # --quick: one label-free job on COMPAS
# The label-free rows' settings by default: the tabular ones. On the image settings each
# Poisoner job takes 5–7 min on 2 cores (1,500 f_B steps × 4 folds of the CNN), which would
# add over an hour to the run; ``--poisoner-settings`` adds them.
LABEL_FREE_SETTINGS = ("compas", "adult")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Quality benchmark through the running service.")
    p.add_argument("--quick", action="store_true", help="one seed, COMPAS only, results in .cache")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1")
    p.add_argument("--settings", default=",".join(SETTINGS), help=f"any of {list(SETTINGS)}")
    p.add_argument("--out", type=Path, help="results folder (default bench/results)")
    p.add_argument(
        "--gate-baseline",
        type=Path,
        help="an earlier run's quality.json whose gate statistics to keep beside this run's",
    )
    p.add_argument(
        "--no-outer",
        dest="outer",
        action="store_false",
        help="skip the outer cross-validation and the stacked attributes of the tabular "
        "settings (--quick skips them)",
    )
    p.add_argument(
        "--no-poisoner",
        dest="poisoner",
        action="store_false",
        help="skip the label-free rows (the Poisoner's jobs and the poisoner_retrain "
        "laboratory row)",
    )
    p.add_argument(
        "--no-fmd",
        dest="fmd",
        action="store_false",
        help="skip the FMD jobs (vanilla.fmd and vanilla.eraser+fmd on COMPAS and Adult)",
    )
    p.add_argument(
        "--no-audit",
        dest="audit",
        action="store_false",
        help="skip the counterfactual bias audits of the seed-0 vanilla models (POST /audits)",
    )
    p.add_argument(
        "--poisoner-rows",
        default=",".join(LABEL_FREE_ROWS),
        help=f"which label-free jobs to run, any of {list(LABEL_FREE_ROWS)} (--quick: "
        f"{','.join(QUICK_LABEL_FREE)})",
    )
    p.add_argument(
        "--poisoner-settings",
        default=",".join(LABEL_FREE_SETTINGS),
        help="the settings that get the label-free rows (of those run)",
    )
    p.add_argument(
        "--label-free-only",
        action="store_true",
        help="run only the label-free jobs (and laboratory rows) of --poisoner-settings and "
        "write their records to OUT/label_free_measured.json, for a later run's "
        "--label-free-from (the image settings' Poisoner jobs take over an hour)",
    )
    p.add_argument(
        "--label-free-from",
        type=Path,
        help="a --label-free-only run's label_free_measured.json: its records join this run's "
        "for the settings whose label-free rows this run does not measure",
    )
    p.add_argument(
        "--carry-from",
        type=Path,
        help="an earlier quality.json whose sections this run does not measure (the outer "
        "cross-validation and stacked attributes with --no-outer, settings left out of "
        "--settings) are kept, marked with its date",
    )
    p.add_argument(
        "--report-from",
        type=Path,
        help="measure nothing: summarise the records an earlier run kept "
        f"({RUN_DIR.name}/last_measured.pickle under .cache)",
    )
    p.add_argument(
        "--recorded-command",
        help="with --report-from, for records kept before runs kept their arguments: the "
        "arguments the measuring run was given",
    )
    p.add_argument(
        "--markdown-only",
        action="store_true",
        help="measure nothing: rewrite the BENCHMARKS.md section from the folder's quality.json",
    )
    args = p.parse_args(argv)
    args.argv = list(argv)  # how this run was asked for, kept in quality.json
    args.measured_at = None  # now, unless --report-from summarises an earlier run
    if args.quick:
        args.seeds, args.settings, args.outer = 1, "compas", False
        args.poisoner_rows = ",".join(QUICK_LABEL_FREE)
        args.out = args.out or RUN_DIR / "quick"
    args.out = args.out or RESULTS
    args.settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    unknown = [s for s in args.settings if s not in SETTINGS]
    if unknown:
        p.error(f"unknown setting(s) {unknown}; choose from {list(SETTINGS)}")
    args.poisoner_rows = tuple(r.strip() for r in args.poisoner_rows.split(",") if r.strip())
    args.poisoner_settings = {s.strip() for s in args.poisoner_settings.split(",") if s.strip()}
    if args.poisoner_settings - set(SETTINGS):
        p.error(f"unknown setting(s) in --poisoner-settings; choose from {list(SETTINGS)}")
    if set(args.poisoner_rows) - set(LABEL_FREE_ROWS):
        p.error(f"unknown label-free row(s) in {args.poisoner_rows}; choose from "
                f"{list(LABEL_FREE_ROWS)}")  # fmt: skip
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.markdown_only:
        res = orjson.loads((args.out / "quality.json").read_bytes())
        write_markdown(ROOT / "BENCHMARKS.md", res, plot_paths(args.out, res))
        return res
    if args.report_from is not None:
        return _report_from(args)
    started = time.perf_counter()
    seeds = list(range(args.seeds))
    runs = plan(args.settings, seeds, DATA_DIR)  # the vendored bench/data
    outer = plan_outer(args.settings, seeds, DATA_DIR) if args.outer else []
    stacked = plan_stacked(args.settings, seeds, DATA_DIR) if args.outer else []
    label_free, retrain = _plan_label_free(args, runs)
    fmd = plan_fmd(runs) if args.fmd and not args.label_free_only else []
    audits = plan_audits(runs) if args.audit and not args.label_free_only else []
    if args.label_free_only:
        deployed = {lf.deployed for lf in label_free}
        runs, outer, stacked = [r for r in runs if r.deployed in deployed], [], []
    phases = {"deployed_models": _deploy(runs + outer)}
    t0 = time.perf_counter()
    if args.label_free_only:
        return _dump_label_free(args, _measure([], [], [], label_free, retrain))
    measured = _measure(runs, outer, stacked, label_free, retrain, fmd, audits)
    phases["jobs_and_predictions"] = time.perf_counter() - t0
    _keep_measured(args, measured, phases, time.perf_counter() - started)
    return _finish(args, measured, phases, time.perf_counter() - started)


def _keep_measured(
    args: argparse.Namespace, measured: dict[str, list], phases: dict[str, float], wall_s: float
) -> None:
    """Every record, whole, before anything is summarised: a report that fails (or an
    earlier ``--label-free-only`` run that is still going) costs a ``--report-from`` run, not
    the measurements. Local, this run's own data: pickled."""
    path = RUN_DIR / "last_measured.pickle"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps({"args": vars(args), "measured": measured, "phases": phases,
                                   "wall_s": wall_s, "measured_at": _now()}))  # fmt: skip
    print(f"measured records: {path}")


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _report_from(args: argparse.Namespace) -> dict[str, Any]:
    """``--report-from``: summarise a kept run's records (this invocation's
    ``--label-free-from`` and ``--out`` apply)."""
    kept = pickle.loads(args.report_from.read_bytes())  # this bench's own file
    for key in ("seeds", "settings", "poisoner_settings", "quick"):
        setattr(args, key, kept["args"][key])
    args.argv = kept["args"].get("argv") or shlex.split(args.recorded_command or "")
    # when the measuring ended: kept since, or the file's own time for an older record
    mtime = datetime.datetime.fromtimestamp(args.report_from.stat().st_mtime, datetime.UTC)
    args.measured_at = kept.get("measured_at") or mtime.isoformat(timespec="seconds")
    return _finish(args, kept["measured"], kept["phases"], kept["wall_s"])


def _finish(
    args: argparse.Namespace, measured: dict[str, list], phases: dict[str, float], wall_s: float
) -> dict[str, Any]:
    if args.label_free_from is not None:
        _join_label_free(measured, args.label_free_from, args.poisoner_settings)
    res = _report(args, measured, phases, wall_s)
    print(f"results: {args.out / 'quality.json'}")
    for dataset, checks in res["_targets"].items():
        verdicts = ", ".join(f"{k}: {v['value']} ({'met' if v['met'] else 'MISSED'})"
                             for k, v in checks.items())  # fmt: skip
        print(f"  {dataset}: {verdicts}")
    return res


def _plan_label_free(args: argparse.Namespace, runs: list[Run]) -> tuple[list[LabelFreeRun],
                                                                        list[Run]]:  # fmt: skip
    """The label-free jobs (``--poisoner-rows``) and the laboratory retraining (vanilla model,
    full calibration set); ``--quick``: the ``poisoner_eraser`` job alone, no retraining;
    ``--no-poisoner``: none."""
    if not args.poisoner:
        return [], []
    runs = [r for r in runs if r.setting in args.poisoner_settings]
    label_free = plan_label_free(runs, args.poisoner_rows)
    if args.quick:
        return label_free, []
    vanilla = [r for r in runs if r.variant == "vanilla" and r.calibration == "full"
               and retrain_supported(r.task)]  # fmt: skip
    return label_free, vanilla


def _dump_label_free(args: argparse.Namespace, measured: dict[str, list]) -> dict[str, Any]:
    """A ``--label-free-only`` run's records, whole (``_report`` keeps only headlines), with
    when and how they were measured."""
    kept = {k: measured[k] for k in ("label_free", "retrain")}
    kept["_meta"] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "seeds": list(range(args.seeds)),
        "settings": sorted(args.poisoner_settings & set(args.settings)),
        "rows": list(args.poisoner_rows),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "label_free_measured.json"
    path.write_bytes(orjson.dumps(kept, option=orjson.OPT_SERIALIZE_NUMPY))
    print(f"label-free records: {path}")
    return kept


def _join_label_free(measured: dict[str, list], path: Path, measured_here: set[str]) -> None:
    """Add an earlier ``--label-free-only`` run's records for the settings this run's
    label-free rows did not cover (a setting measured here keeps this run's records only)."""
    earlier = orjson.loads(path.read_bytes())
    for kind in ("label_free", "retrain"):
        measured.setdefault(kind, []).extend(
            r for r in earlier[kind] if r["setting"] not in measured_here
        )
    joined = sorted({r["setting"] for r in earlier["label_free"]} - measured_here)
    if joined and "_meta" in earlier:
        measured["label_free_joined"] = [earlier["_meta"] | {"joined_settings": joined}]


def _deploy(runs: list[Run]) -> float:
    """Train (or read from the cache) every deployed model; write the black box's folder."""
    started = time.perf_counter()
    model_dir = RUN_DIR / "models"
    shutil.rmtree(model_dir, ignore_errors=True)
    unique = {r.deployed: r for r in runs}
    for name, run in tqdm(unique.items(), desc="deployed models", unit="model"):
        blob = deployed_onnx(run.task, run.variant, run.seed, RUN_DIR / "cache")
        t = run.task
        write_onnx_model(model_dir, name, blob, t.classes, t.input_shape, t.feature_names)
    return time.perf_counter() - started


def _measure(
    runs: list[Run],
    outer: list[Run],
    stacked: list[StackRun],
    label_free: list[LabelFreeRun] | None = None,
    retrain: list[Run] | None = None,
    fmd: list[FmdRun] | None = None,
    audits: list[AuditRun] | None = None,
) -> dict[str, list]:
    """Queue every job at once (the workers train the next while this process measures the
    last), then measure the runs in order: the fixed-split runs, the outer folds, the stacks,
    the label-free jobs, the FMD jobs (last: each is stacked with its seed's Eraser patch, from
    the fixed-split records), the audits of the vanilla models. The laboratory retraining runs
    here while the workers train.
    ``{"fixed" | "outer" | "stacked" | "label_free" | "retrain" | "fmd" | "audit": records}``."""
    label_free, retrain, fmd, audits = label_free or [], retrain or [], fmd or [], audits or []
    models = [r.model() for r in [*runs, *outer, *stacked, *label_free, *fmd]]
    with running_system(models, RUN_DIR / "models") as system:
        gw = Gateway(system.gateway_url)
        try:
            done: dict[str, list] = {"fixed": [], "outer": [], "stacked": [], "label_free": [],
                                     "fmd": [], "audit": []}  # fmt: skip

            def with_eraser(gw: Gateway, run: FmdRun, url: str) -> dict[str, Any]:
                return evaluate_fmd(gw, run, url, _eraser_patch(done["fixed"], run))

            queued = [
                *(("fixed", r, _submit(gw, r), evaluate) for r in runs),
                *(("outer", r, _submit(gw, r), evaluate_outer) for r in outer),
                *(("stacked", r, submit_stacked(gw, r), evaluate_stacked) for r in stacked),
                *(("label_free", r, _submit(gw, r), evaluate_label_free) for r in label_free),
                *(("fmd", r, _submit(gw, r), with_eraser) for r in fmd),
                *(("audit", r, submit_audit(gw, r), evaluate_audit) for r in audits),
            ]
            done["retrain"] = [
                evaluate_retrain(r, RUN_DIR / "cache")
                for r in tqdm(retrain, desc="poisoner_retrain (laboratory)", unit="model")
            ]
            for kind, run, url, measure in tqdm(queued, desc="jobs + test predictions",
                                                unit="run"):  # fmt: skip
                done[kind].append(measure(gw, run, url))
            return done
        finally:
            gw.close()


def _eraser_patch(fixed: list[dict[str, Any]], run: FmdRun) -> dict[str, Any] | None:
    """The same seed's Eraser patch (vanilla model, full calibration set), if measured."""
    for record in fixed:
        if (record["setting"], record["variant"], record["calibration"], record["seed"]) == (
            run.setting, run.variant, run.calibration, run.seed
        ):  # fmt: skip
            return record["patch_ref"]
    return None


def _submit(gw: Gateway, run: Run) -> str:
    if isinstance(run, FmdRun):
        pairs = calibration_pairs(run.task) if run.uploads_pairs else None
        return gw.submit(run.gateway_model, run.task, run.calib, run.seed,
                         bias_column=pairs is not None, pairs=pairs,
                         **run.spec_fields())  # fmt: skip
    fields = run.spec_fields() if isinstance(run, LabelFreeRun) else {}
    return gw.submit(run.gateway_model, run.task, run.calib, run.seed, **fields)


def _report(
    args: argparse.Namespace, measured: dict[str, list], phases: dict[str, float], wall_s: float
) -> dict[str, Any]:
    results, outer, stacked = measured["fixed"], measured["outer"], measured["stacked"]
    label_free, retrain = measured.get("label_free", []), measured.get("retrain", [])
    fmd = measured.get("fmd", [])
    summary = aggregate(results)
    label_free_rows, label_free_details = aggregate_label_free(label_free, retrain)
    fmd_rows, fmd_details = aggregate_fmd(fmd)
    summary = merge_rows(merge_rows(summary, label_free_rows), fmd_rows)
    command = (
        "python -m bench.quality " + shlex.join(args.argv) if args.argv else "make bench-quality"
    )
    res: dict[str, Any] = {
        **for_json(summary),
        "_targets": targets(summary)
        | label_free_targets(summary, label_free, results)
        | fmd_targets(summary, fmd, results),
        "_meta": {
            "date": args.measured_at or _now(),
            "cores": os.cpu_count(),
            "seeds": list(range(args.seeds)),
            "settings": args.settings,
            "command": command,
            "wall_s": round(wall_s, 1),
            "phases_s": {k: round(v, 1) for k, v in phases.items()},
        },
        "_runs": [_run_record(r) for r in results],
    }
    res["_gate"] = {"this_run": gate_stats(res["_runs"])}
    if label_free or retrain:
        res["_label_free"] = {
            "settings": label_free_details,
            "runs": [_label_free_record(r) for r in label_free],
            "retrain": [_label_free_record(r) for r in retrain],
        }
    if measured.get("label_free_joined"):
        res["_label_free"]["joined"] = measured["label_free_joined"][0]
    if measured.get("audit"):
        res["_audit"] = measured["audit"]
    if fmd:
        res["_fmd"] = {
            "settings": fmd_details,
            "runs": [_label_free_record(r) for r in fmd],
        }
    if outer:
        res["_outer_cv"] = outer_summary(outer)
    if stacked:
        res["_stacked"] = stacked_summary(stacked)
    if args.carry_from is not None:
        _carry(res, orjson.loads(args.carry_from.read_bytes()))
    if args.gate_baseline is not None:  # the same statistics from an earlier run, for comparison
        baseline = orjson.loads(args.gate_baseline.read_bytes())
        res["_gate"]["baseline"] = baseline["_gate"]["this_run"] | {
            "date": baseline["_meta"]["date"]
        }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "quality.json").write_bytes(
        orjson.dumps(res, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
    )
    for key in summary:
        plot_setting(SETTINGS[key].title, summary[key], args.out / f"quality_{key}.png")
    if not args.quick and args.out == RESULTS:
        write_markdown(ROOT / "BENCHMARKS.md", res, plot_paths(args.out, res))
    return res


def _carry(res: dict[str, Any], earlier: dict[str, Any]) -> None:
    """``--carry-from``: what this run did not measure, kept whole from an earlier run and
    marked with its date: the outer cross-validation and the stacked attributes (30 more
    deployed models and 36 jobs) and the settings left out of ``--settings`` (``cmnist_aug``'s
    three deployed models train for 150 augmented epochs each), with their runs."""
    sections = [k for k in ("_outer_cv", "_stacked") if k in earlier and k not in res]
    settings = [k for k in SETTINGS if k in earlier and k not in res]
    for key in [*sections, *settings]:
        res[key] = earlier[key]
    res["_runs"] += [r for r in earlier.get("_runs", []) if r["setting"] in settings]
    if sections or settings:
        res["_carried"] = {"sections": sections, "settings": settings,
                           "date": earlier["_meta"]["date"],
                           "command": earlier["_meta"]["command"]}  # fmt: skip


def _run_record(run: dict[str, Any]) -> dict[str, Any]:
    """One run as ``quality.json`` keeps it: the job's verdict and what it was decided on (the
    verdict rows' changes with their intervals, and the tuning rows that chose α), and each
    row's headline numbers (the summary has the rest, over seeds)."""
    headline = ("avg", "worst", "eo", "accuracy", "cf_bias")
    rows = {
        k: {m: round(row[m], 2) for m in (*headline, "agreement") if m in row}
        for k, row in run["rows"].items()
    }
    gate = ("avg_group_acc", "eo_bias")
    tuning = {k: {m: round(run["tuning"][k][m], 2) for m in gate} for k in ("raw", "fair")}
    evidence = run["evidence"]
    verdict = {
        "rows": evidence["rows"],
        "eo": [round(evidence[s]["eo_bias"]["estimate"], 2) for s in ("raw", "fair")],
        **{
            f"{m}_change": [round(evidence["change"][m][k], 2) for k in ("estimate", "low", "high")]
            for m in ("eo_bias", "accuracy", "avg_group_acc")
        },
        "comparable_classes": evidence.get("comparable_classes"),
    }
    dropped = ("served_revision", "reason", "evidence")
    kept = {k: v for k, v in run.items() if k not in dropped}
    why = run["reason"].split(" (", 1)[0]  # "validated", "not enough evidence", a failed criterion
    return kept | {"rows": rows, "tuning": tuning, "verdict": verdict | {"why": why}}


def _label_free_record(run: dict[str, Any]) -> dict[str, Any]:
    """A label-free job or retraining as ``quality.json`` keeps it: its rows' headline numbers
    (per-group accuracies are in the summary)."""
    headline = ("avg", "worst", "eo", "accuracy", "cf_bias", "agreement")
    rows = {k: {m: round(v[m], 2) for m in headline if m in v} for k, v in run["rows"].items()}
    return run | {"rows": rows}


if __name__ == "__main__":
    main()
