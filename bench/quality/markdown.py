"""The Quality section of ``BENCHMARKS.md``, regenerated between its markers on every full run
and by ``python -m bench.quality --markdown-only`` (from ``quality.json``, measuring nothing).

Everything in the section is rendered from ``quality.json``: the tables, the spread over seeds
behind every summary figure (``_runs`` keeps each run), and the notes on method, whose figures
are computed here rather than typed.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from bench.markdown import replace_section
from bench.quality.counterfactual_markdown import counterfactual_section
from bench.quality.label_free_markdown import is_label_free, label_free_section
from bench.quality.outer_markdown import outer_section
from bench.quality.protocol import SETTINGS
from bench.quality.results import PAPER
from bench.quality.stacked import stacked_markdown
from deploy.local.processes import ROOT

MARKERS = ("<!-- quality:start -->", "<!-- quality:end -->")
METHOD_LABELS = {
    "raw": "raw deployed model",
    "eraser": "Eraser, α = 1",
    "eraser_tuned": "Eraser, α chosen on calibration data",
    "linearpost_blind": "LinearPost, attribute-blind (EO, tolerance 0)",
    "linearpost_blind_relaxed": "LinearPost, attribute-blind (EO, tolerance 0.05)",
    "fairlearn_to": "ThresholdOptimizer (EO)*",
    "error_parity": "error-parity RelaxedThresholdOptimizer (EO, tolerance 0)*",
    "error_parity_relaxed": "error-parity RelaxedThresholdOptimizer (EO, tolerance 0.05)*",
    "cf_average": "`cf_average`: black box averaged over the attribute's values (k calls)",
    "fmd": 'FMD patch (`method: "fmd"`), served',
    "eraser+fmd": "Eraser + FMD stacked (Eq. 21), replayed",
}
Runs = list[dict[str, Any]]


def write_markdown(path: Path, res: dict[str, Any], plots: dict[str, str]) -> None:
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    path.write_text(replace_section(text, section(res, plots), MARKERS))


def plot_paths(out: Path, res: dict[str, Any]) -> dict[str, str]:
    """The PNG of each setting in ``res``, relative to the repository (how BENCHMARKS.md links
    it); settings whose PNG is missing get none."""
    paths = {key: out / f"quality_{key}.png" for key in res if key in SETTINGS}
    return {key: os.path.relpath(path, ROOT) for key, path in paths.items() if path.exists()}


def section(res: dict[str, Any], plots: dict[str, str]) -> str:
    meta, runs = res["_meta"], res.get("_runs", [])
    lines = [
        MARKERS[0], "## Quality", "",
        f"Measured {meta['date']} on {meta['cores']} cores, {len(meta['seeds'])} seed(s) "
        f"({', '.join(map(str, meta['seeds']))}), mean ± std over seeds, all in one run of "
        f"`{meta['command']}` ({meta['wall_s'] / 60:.1f} min; `bench/results/quality.json`). "
        "Every deployed model is a separate HTTP black box; every patch comes from a training "
        "job (`POST /patches` → `eraser worker`) that queried it; every number below is computed "
        "from `POST /predict` answers on the test split, which nothing was fitted or tuned on.",
        "",
        "Metrics (%, `patch_training.metrics`): average- and worst-group accuracy over "
        "(target, bias) groups; EO bias = paper Eq. 20, for a multi-valued bias the mean over "
        "target classes of max − min accuracy across bias groups; fairlearn's "
        "`equalized_odds_difference` (EOD) and `demographic_parity_difference` (DPD) as a "
        "cross-check (binary targets only). cf bias: counterfactual bias (docs/audit.md, "
        "`patch_training.audit`) of the row's answers, mean over test rows of "
        "|p(ŷ|x) − p(ŷ|x̄)| with ŷ the decision on x and x̄ the row with the attribute "
        "flipped (COMPAS, Adult: an input column) or the same digit on the nine other "
        "background colours (Colored MNIST), x̄ answered through the same `POST /predict`; "
        "for rows that output decisions only (the peers) the share of decisions that flip, x "
        "and x̄ drawn with the same seeded random numbers; — where the run did not measure it. "
        "α: the job's choice per seed. "
        "*ThresholdOptimizer and error-parity need each test instance's sensitive attribute at "
        "prediction time; the Eraser and LinearPost (attribute-blind: it predicts the attribute "
        "and the target from the inputs and the black box's answers, then post-processes "
        "linearly) do not. The peers handle binary targets only, so Colored MNIST has no such "
        "rows; all are fitted on the job's calibration rows and the same black-box answers. "
        "Where the gate rejected a patch the gateway keeps serving the raw model, so that seed's "
        "Eraser rows are the raw model's (counted in the table). Each job sets aside a share of "
        "every (target, bias) cell of its calibration set as verdict rows: the nets are fitted, "
        "stopped early and α is chosen on the other rows only, and the gate judges the exported "
        "graph at the chosen α on the verdict rows, on bootstrap intervals (resampling within "
        "each cell). It validates a patch only when the interval of the EO bias reduction lies "
        "above `gate.min_bias_reduction_pp` and the intervals of the accuracy and average-group "
        "accuracy drops lie below `gate.max_acc_drop_pp` and `gate.max_avg_acc_drop_pp`; the "
        "per-seed tables show what it saw.",
        "", *_summary(res), "", *_targets(res["_targets"], runs), "",
        *_gate_record(res.get("_gate")),
    ]  # fmt: skip
    if carried := res.get("_carried"):
        what = [CARRIED_NAMES.get(k, k) for k in carried["sections"]]
        what += [f"the `{k}` setting" for k in carried.get("settings", [])]
        lines += [
            f"*Carried from the run of {carried['date']} (`{carried['command']}`, "
            f"`--carry-from`), not measured by this one: {', '.join(what)}. Changes since then "
            "are in CHANGELOG.md; the one that touches them: a job now activates at most one "
            "patch, so the stacked section's *served* stacks would no longer be served (its "
            "replayed stacks do not depend on it). The carried rows have no cf bias.*",
            "",
        ]
    if joined := res.get("_label_free", {}).get("joined"):
        lines += [
            f"*The label-free rows of {', '.join(f'`{k}`' for k in joined['joined_settings'])} "
            f"were measured by a `--label-free-only` run of {joined['date']} (the same deployed "
            "models and calibration sets, its own gateway and workers) and joined into this one "
            "(`--label-free-from`).*",
            "",
        ]
    label_free = res.get("_label_free", {})
    for key in SETTINGS:
        if key in res:
            checks = res["_targets"].get(key, {})
            eraser_rows = {k: v for k, v in res[key].items() if not is_label_free(k)}
            lines += _setting(key, eraser_rows, plots.get(key), _of(runs, setting=key), checks)
            lines += label_free_section(
                key,
                SETTINGS[key].title,
                res[key],
                label_free.get("settings", {}).get(key),
                _of(label_free.get("runs", []), setting=key),
                res["_targets"].get(f"{key}, label-free", {}),
            )
    lines += outer_section(res.get("_outer_cv"), {k: s.title for k, s in SETTINGS.items()},
                           METHOD_LABELS | {"candidate": "Eraser, the job's patch (served or not)"},
                           {k: res.get(k, {}).get("vanilla.raw", {}).get("eo_floor")
                            for k in SETTINGS})  # fmt: skip
    lines += counterfactual_section(res, {k: s.title for k, s in SETTINGS.items()})
    lines += stacked_markdown(res.get("_stacked", {}))
    lines += _across(res, runs)
    lines += _protocol(meta)
    lines.append(MARKERS[1])
    return "\n".join(lines)


# --- what every setting shares --------------------------------------------------------------


def _summary(res: dict[str, Any]) -> list[str]:
    """Raw → Eraser for the vanilla model and the full calibration set, one line per setting."""
    lines = [
        "Summary (vanilla deployed model, full calibration set, α chosen on calibration data; "
        "raw → Eraser, mean over seeds):",
        "",
        "| setting | avg-group | worst-group | EO bias | EO change | rejected by the gate |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key in SETTINGS:
        rows = res.get(key, {})
        raw, fair = rows.get("vanilla.raw"), rows.get("vanilla.eraser_tuned")
        if raw is None or fair is None:
            continue
        cells = [SETTINGS[key].title, *(f"{raw[m]:.2f} → {fair[m]:.2f}" for m in
                 ("avg", "worst", "eo")), _change(raw["eo"], fair["eo"]),
                 f"{fair.get('rejected_by_gate', 0)}/{fair['n']}"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _targets(checks: dict[str, dict[str, Any]], runs: Runs) -> list[str]:
    lines = ["Targets (vanilla deployed model, full calibration set, α chosen on calibration "
             "data), each with its value per seed:", ""]  # fmt: skip
    for dataset, items in checks.items():
        own = _of(runs, setting=dataset, variant="vanilla", calibration="full")
        parts = []
        for name, c in items.items():
            seeds = c.get("per_seed") or [_target_value(name, run) for run in own]
            each = f" (per seed {' / '.join(f'{v:.2f}' for v in seeds)})" if seeds else ""
            verdict = "met" if c["met"] else "**missed**"
            parts.append(f"{_pretty(name)}: {c['value']:.2f}{each} — {verdict}")
        lines.append(f"- {dataset}: " + "; ".join(parts))
    return lines


def _target_value(name: str, run: dict[str, Any]) -> float:
    """A target's quantity in one run, as ``results.targets`` computes it over the means."""
    metric = name.split()[0]
    raw, fair = run["rows"]["raw"][metric], run["rows"]["eraser_tuned"][metric]
    if "reduced" in name:
        return 100 * (1 - fair / raw) if raw else 0.0
    if "raw" in name:
        return fair - raw
    return fair


# --- one setting ----------------------------------------------------------------------------


CARRIED_NAMES = {"_outer_cv": "the outer cross-validation", "_stacked": "the stacked attributes"}


def _setting(
    key: str, rows: dict[str, dict[str, Any]], plot: str | None, runs: Runs,
    checks: dict[str, Any],
) -> list[str]:  # fmt: skip
    lines = [f"### {SETTINGS[key].title}", ""]
    header = "| deployed | calibration | method | avg-group | worst-group | EO bias | accuracy "
    header += "| EOD (fairlearn) | DPD (fairlearn) | cf bias | α | paper avg / worst / EO |"
    lines += [header, "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for row_key, row in rows.items():
        parts = row_key.split(".")
        variant, method = parts[0], parts[-1]
        calibration = "small" if len(parts) == 3 else "full"
        own = _of(runs, variant=variant, calibration=calibration)
        label = METHOD_LABELS[method]
        if row.get("rejected_by_gate"):
            label += f" ({row['rejected_by_gate']}/{row['n']} rejected by the gate)"
        alpha = ", ".join(f"{a:g}" for a in row.get("alpha", [])) or "—"
        paper = PAPER.get(key, {}).get(row_key)
        paper_text = " / ".join(f"{v:.2f}" for v in paper) if paper else "—"
        cells = [variant, "—" if method == "raw" else _calibration_rows(row, own), label,
                 *(_cell(row, m) for m in
                   ("avg", "worst", "eo", "accuracy", "eod_fairlearn", "dpd_fairlearn",
                    "cf_bias")),
                 alpha, paper_text]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    floor = rows.get("vanilla.raw", {}).get("eo_floor")
    if floor is not None:
        std = rows["vanilla.raw"].get("eo_floor_std", 0.0)
        lines += [
            "",
            (
                f"EO noise floor of this test split: {floor:.2f} ± {std:.2f} — the EO bias a "
                "classifier with equal true accuracy in every group would still measure, from "
                "sampling noise alone (`bench.quality.metrics.eo_noise_floor`)."
            ),
        ]
    notes = [n for n in (_floor_note(rows, runs, checks), _peer_note(rows),
                         _colour_note(key, rows)) if n]  # fmt: skip
    for note in notes:
        lines += ["", note]
    lines += _groups(rows, runs)
    lines += _per_seed(runs)
    if plot:
        lines += ["", f"![{SETTINGS[key].title}]({plot})"]
    return [*lines, ""]


def _cell(row: dict[str, Any], metric: str) -> str:
    if metric not in row:
        return "—"
    std = row.get(f"{metric}_std", 0.0)
    return f"{row[metric]:.2f} ± {std:.2f}" if row["n"] > 1 else f"{row[metric]:.2f}"


def _calibration_rows(row: dict[str, Any], runs: Runs) -> str:
    """The calibration set's size: per seed where the seeds' sets differ in size."""
    sizes = sorted({r["calibration_rows"] for r in runs}) or [row["calibration_rows"]]
    return f"{sizes[0]} rows" if len(sizes) == 1 else f"{sizes[0]}–{sizes[-1]} rows"


def _floor_note(rows: dict[str, dict[str, Any]], runs: Runs, checks: dict[str, Any]) -> str | None:
    """Where an EO target lies against the split's noise floor, with the seeds it rests on."""
    raw = rows.get("vanilla.raw", {})
    limit = next((_threshold(n) for n in checks if n.startswith("eo <=")), None)
    if "eo_floor" not in raw or limit is None:
        return None
    floor = raw["eo_floor"]
    own = _of(runs, variant="vanilla", calibration="full")
    seeds = [r["rows"]["eraser_tuned"]["eo"] for r in own]
    where = "below" if limit < floor else "above"
    text = f"The EO target (≤ {limit:g}) lies {where} this split's noise floor ({floor:.2f})"
    if limit < floor:
        text += (
            ": a model with equal true accuracy in every group would miss it on average, "
            "and averaging seeds lowers the variance of the measured EO, not this bias"
        )
    if seeds:
        above = [v - floor for v in seeds]
        text += (
            f". Per seed the patched vanilla model measured "
            f"{' / '.join(f'{v:.2f}' for v in seeds)}, "
        )
        text += (
            f"{min(above):.2f}–{max(above):.2f} points above the floor"
            if min(above) > 0
            else f"{min(above):+.2f} to {max(above):+.2f} points from the floor"
        )
    return text + "."


def _peer_note(rows: dict[str, dict[str, Any]]) -> str | None:
    peer, fair = rows.get("vanilla.fairlearn_to"), rows.get("vanilla.eraser_tuned")
    if peer is None or fair is None:
        return None
    return (
        "ThresholdOptimizer, which reads each test row's sensitive attribute, measured EO "
        f"{peer['eo']:.2f} at average- / worst-group {peer['avg']:.2f} / {peer['worst']:.2f}; "
        f"the Eraser (α chosen, vanilla, full calibration set) EO {fair['eo']:.2f} at "
        f"{fair['avg']:.2f} / {fair['worst']:.2f}, without it."
    )


def _colour_note(key: str, rows: dict[str, dict[str, Any]]) -> str | None:
    """Colored MNIST at the paper's ρ: why there is little to recover, from the raw row."""
    raw, paper = rows.get("vanilla.raw"), PAPER.get(key, {}).get("vanilla.raw")
    if raw is None or paper is None or key != "cmnist":
        return None
    text = (f"The deployed vanilla CNN reaches {raw['avg']:.2f} average-group accuracy (the "
            f"paper's vanilla model: {paper[0]:.2f}) and {raw['worst']:.2f} on its worst (digit, "
            "colour) group")  # fmt: skip
    if raw["worst"] == 0:
        text += (": at this data scale it leans on the background colour, so its outputs carry "
                 "little digit evidence for a post-hoc patch to bring forward. A calibration set "
                 "coloured like the training data can also leave (digit, colour) cells of "
                 "Eq. 17 empty; there the class mean stands in, which carries no colour rule. "
                 "The ρ = 0.9 setting, whose calibration colours are uniform, is the one where "
                 "the method has something to work with")  # fmt: skip
    return text + "."


def _groups(rows: dict[str, dict[str, Any]], runs: Runs) -> list[str]:
    """Per-group accuracies, where ``quality.json`` keeps them, with the gap between bias groups
    within each target class (EO bias is the mean of these gaps, per seed)."""
    stored = {k: r["groups"] for k, r in rows.items() if r.get("groups")}
    if not stored:
        return []
    cells = sorted({tuple(g.split(",", 1)) for g in next(iter(stored.values()))})
    targets = sorted({y for y, _ in cells})
    header, align = ["deployed", "calibration", "method"], ["---"] * 3
    for y in targets:
        header += [f"{y}, {b}" for yy, b in cells if yy == y] + [f"gap at {y}"]
        align += ["---:"] * (sum(yy == y for yy, _ in cells) + 1)
    lines = ["", "Group accuracies (%, mean over seeds) and the gap between bias groups within "
             "each target class:", "", "| " + " | ".join(header) + " |",
             "|" + "|".join(align) + "|"]  # fmt: skip
    gaps: dict[str, dict[str, float]] = {}
    for key, groups in stored.items():
        parts = key.split(".")
        own = _of(runs, variant=parts[0], calibration="small" if len(parts) == 3 else "full")
        size = "—" if parts[-1] == "raw" else _calibration_rows(rows[key], own)
        row = [parts[0], size, METHOD_LABELS[parts[-1]]]
        gaps[key] = {}
        for y in targets:
            values = [groups[f"{yy},{b}"] for yy, b in cells if yy == y]
            gaps[key][y] = max(values) - min(values)
            row += [f"{v:.2f}" for v in values] + [f"{gaps[key][y]:.2f}"]
        lines.append("| " + " | ".join(row) + " |")
    trades = _trades(rows, gaps)
    if trades:
        lines += [
            "",
            (
                "Patches that every seed's gate validated and that narrowed the gap in one target "
                "class while widening it in another (raw → patched): "
                + "; ".join(trades)
                + ". The "
                "patch distils the deployed model's lean towards one class together with the bias "
                "shortcut (Eq. 17), so correcting one gap can widen the other."
            ),
        ]
    return lines


def _trades(rows: dict[str, dict[str, Any]], gaps: dict[str, dict[str, float]]) -> list[str]:
    out = []
    for key, row in rows.items():
        parts = key.split(".")
        raw_key = f"{parts[0]}.raw"
        if parts[-1] not in ("eraser", "eraser_tuned") or row.get("rejected_by_gate"):
            continue
        if key not in gaps or raw_key not in gaps:
            continue
        moves = {y: (gaps[raw_key][y], gaps[key][y]) for y in gaps[key]}
        if any(b < a for a, b in moves.values()) and any(b > a for a, b in moves.values()):
            calibration = f"{row['calibration_rows']} rows"
            shown = ", ".join(f"gap at {y} {a:.2f} → {b:.2f}" for y, (a, b) in moves.items())
            raw = rows[raw_key]
            shown += "".join(f", {name} {raw[m]:.2f} → {row[m]:.2f}" for m, name in
                             (("avg", "avg-group"), ("eo", "EO bias")))  # fmt: skip
            out.append(f"{parts[0]}, {calibration}, {METHOD_LABELS[parts[-1]]}: {shown}")
    return out


def _per_seed(runs: Runs) -> list[str]:
    """Each job's verdict and the figures it was judged on, beside what was served on test."""
    if not runs:
        return []
    lines = ["", "Per seed: the job's α and gate verdict; on its verdict rows (the exported "
             "patch at that α, rows that decided nothing else) the EO bias raw → patched and "
             "the interval of the change; what the gateway served at the job's α on the test "
             "split; and the job's own time:", "",
             "| deployed | calibration | seed | α | gate | verdict rows | verdict EO | "
             "EO change [interval] | test avg / worst / EO | job (s) |",
             "|---|---|---:|---:|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    order = {"vanilla": 0, "unfair": 1, "full": 0, "small": 1}
    for r in sorted(runs, key=lambda r: (order[r["variant"]], order[r["calibration"]], r["seed"])):
        verdict, served = r["verdict"], r["rows"]["eraser_tuned"]
        change = verdict["eo_bias_change"]
        cells = [
            r["variant"],
            f"{r['calibration_rows']} rows",
            str(r["seed"]),
            f"{r['alpha']:g}",
            r["status"] if r["status"] == "validated" else f"**{r['status']}**",
            str(verdict["rows"]),
            f"{verdict['eo'][0]:.2f} → {verdict['eo'][1]:.2f}",
            f"{change[0]:.2f} [{change[1]:.2f}, {change[2]:.2f}]",
            " / ".join(f"{served[m]:.2f}" for m in ("avg", "worst", "eo")),
            f"{r['job_s']:.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _gate_record(gate: dict[str, Any] | None) -> list[str]:
    """How far the gate's verdicts held on the test split (``gate_stats``), this run beside
    the baseline run when one was given."""
    if not gate:
        return []
    runs = [("this run", gate["this_run"])]
    if "baseline" in gate:
        runs.insert(0, (f"baseline run ({gate['baseline']['date']})", gate["baseline"]))
    tolerance = gate["this_run"]["all"]["acc_tolerance_pp"]
    lines = ["### The gate, judged on the test split", "",
             "A *false validation* is a validated patch whose test-split EO bias did not fall, "
             f"or whose test accuracy fell by more than {tolerance:g} points; a *missed* patch is "
             "a rejected one that would have passed that test (EO bias down by the gate's margin, "
             "accuracy within tolerance), replayed offline from its registered artifact. "
             "*Coverage* is the share of validated patches whose test-split EO change lies "
             "inside the interval their job reported; patches are validated because their "
             "verdict rows looked good, so it is expected below the intervals' nominal level. "
             "*Coverage, all judged* is that share over every patch with an interval, validated "
             "or not. Shares carry 90 % Wilson intervals. A baseline run is an earlier run of "
             "this benchmark whose statistics were kept beside this one "
             "(`--gate-baseline PATH`), e.g. at the revision before a change to the gate.", "",
             "| run | setting | validated | rejected | false validations | missed | coverage "
             "| coverage, all judged |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for label, stats in runs:
        for key in [*(k for k in SETTINGS if k in stats), "all"]:
            row = stats[key]
            replayed = row.get("replayed") or not row["rejected"]
            missed = str(row["missed"]) if "missed" in row and replayed else "—"
            cells = [label, key, row["validated"], row["rejected"], row["false_validations"],
                     missed, _share(row, "coverage"), _share(row, "coverage_all")]  # fmt: skip
            lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    reasons = gate["this_run"]["all"].get("rejected_because")
    if reasons:
        listed = ", ".join(f"{why} {n}" for why, n in reasons.items())
        lines += ["", f"Rejections in this run, by reason: {listed}."]
    return [*lines, ""]


def _share(row: dict[str, Any], key: str) -> str:
    """``0.80 (8/10) [0.55, 0.93]``: a share, its counts and its interval (``gate_stats``)."""
    hits, total = {"coverage": ("covered", "with_interval")}.get(
        key, (f"{key}_covered", f"{key}_judged")
    )
    if row.get(key) is None:
        return "—"
    ci = row.get(f"{key}_interval")
    bounds = f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""
    return f"{row[key]:.2f} ({row[hits]}/{row[total]}){bounds}"


# --- across settings ------------------------------------------------------------------------


def _across(res: dict[str, Any], runs: Runs) -> list[str]:
    """Calibration-set size and cost, each setting's figures side by side."""
    sizes = []
    for key in SETTINGS:
        rows = res.get(key, {})
        raw = rows.get("vanilla.raw")
        parts = []
        for calibration, row_key in (("full", "vanilla.eraser_tuned"),
                                     ("small", "vanilla.small.eraser_tuned")):  # fmt: skip
            row = rows.get(row_key)
            if raw is None or row is None:
                continue
            rows_text = _calibration_rows(row, _of(runs, setting=key, variant="vanilla",
                                                   calibration=calibration))  # fmt: skip
            parts.append(f"{rows_text} {raw['eo']:.2f} → {row['eo']:.2f} ± {row['eo_std']:.2f} "
                         f"({_change(raw['eo'], row['eo'])})")  # fmt: skip
        if len(parts) == 2:
            sizes.append(f"{key}: " + ", ".join(parts))
    lines = ["### Across settings", ""]
    if sizes:
        lines += ["Calibration set size (vanilla deployed model, α chosen; EO bias raw → "
                  "Eraser, ± std over seeds): " + "; ".join(sizes) + ". Each seed's verdict "
                  "is in the per-seed tables.", ""]  # fmt: skip
    times = []
    for key in SETTINGS:
        job_s = [r["job_s"] for r in _of(runs, setting=key)]
        if job_s:
            times.append(f"{key} {min(job_s):.1f}–{max(job_s):.1f} s")
    if times:
        lines += [
            (
                "Cost: a training job (`job_s`, the worker's own stages, min–max over the "
                "setting's runs) took " + ", ".join(times) + "; the whole run took "
                f"{res['_meta']['wall_s'] / 60:.1f} min. Patches, α and ThresholdOptimizer are "
                "seeded with the run's seed, and each job uses one PyTorch thread."
            ),
            "",
        ]
    return lines


def _protocol(meta: dict[str, Any]) -> list[str]:
    return [
        "Protocol. Training split → 5/6 trains the deployed model, 1/6 is the calibration set; "
        "the small calibration set is drawn from it, stratified by target and bias with at "
        "least one row per non-empty (target, bias) cell (its size per seed is in the tables). "
        "COMPAS: the vendored ProPublica slice (5,278 rows), race an input of the deployed "
        "model, fixed 20% test split. Adult: the vendored slice of UCI's train/test files "
        "(`bench/data`), rows with missing values dropped, sex an input. Colored MNIST: the "
        "vendored MNIST slice (`bench/data`), white digits on a background colour (one per "
        "class; the digit's own colour with probability ρ, otherwise one of the other nine), "
        "3×28×28 with 0–255 pixels; the 1,000 test digits are each shown in all ten colours "
        "(100 images per (digit, colour) group). Deployed models (PyTorch, served as ONNX by "
        "the black box): tabular MLP 64-32, CNN 32-64-128; *vanilla* = cross-entropy, *unfair* "
        "= multi-task with a second head predicting the bias attribute. Patches: the job's "
        "defaults (`TrainingJobSpec`), the seed set to the run's seed; α = 1 rows re-weight the "
        "served stack (`PUT /models/{m}/stack`) and ask again; ThresholdOptimizer is fitted on "
        "the black box's answers for the same calibration set."
        + (_augmented_protocol() if "cmnist_aug" in meta.get("settings", ()) else ""),
        "",
        "Reproduce: `make bench-quality` (quick check: `python -m bench.quality --quick`, one "
        "seed, COMPAS only; a subset: `python -m bench.quality --settings compas,adult --seeds "
        "1`; this section alone from the JSON: `python -m bench.quality --markdown-only`). "
        "Phases (s): "
        + ", ".join(f"{k} {v:.0f}" for k, v in meta["phases_s"].items())
        + " (deployed models are cached in `.cache/bench-quality` between runs, keyed by their "
        "training rows and settings).",
        "",
    ]


def _augmented_protocol() -> str:
    """How the ``cmnist_aug`` setting departs from the plain Colored MNIST protocol."""
    return (
        " The augmented Colored MNIST setting departs from the plain mnist_5k protocol in the "
        "deployed model's training only: every epoch each grey training digit is randomly "
        "shifted, rotated, scaled and elastically deformed, then given a background colour "
        "drawn afresh at ρ = 0.99 (a new sample of the same biased distribution each epoch), "
        "for a CNN 8-16-64 trained 150 epochs; its splits, calibration and test sets are the "
        "plain setting's, with calibration colours uniform."
    )


# --- helpers --------------------------------------------------------------------------------


def _of(runs: Runs, **match: str) -> Runs:
    """The runs whose fields equal ``match``, in seed order."""
    own = [r for r in runs if all(r.get(k) == v for k, v in match.items())]
    return sorted(own, key=lambda r: r["seed"])


def _threshold(name: str) -> float:
    return float(re.findall(r"[\d.]+", name)[-1])


def _pretty(name: str) -> str:
    return name.replace("<=", "≤").replace(">=", "≥")


def _change(before: float, after: float) -> str:
    if not before:
        return "—"
    change = round(100 * (after / before - 1))
    return f"{change:+d} %".replace("-", "−") if change else "0 %"
