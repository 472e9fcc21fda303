"""The Quality section of ``BENCHMARKS.md``, regenerated between its markers on every full run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.markdown import replace_section
from bench.quality.protocol import SETTINGS
from bench.quality.results import PAPER

MARKERS = ("<!-- quality:start -->", "<!-- quality:end -->")
METHOD_LABELS = {
    "raw": "raw deployed model",
    "eraser": "Eraser, α = 1",
    "eraser_tuned": "Eraser, α chosen on calibration data",
    "fairlearn_to": "ThresholdOptimizer (EO)*",
}


def write_markdown(path: Path, res: dict[str, Any], plots: dict[str, str]) -> None:
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    path.write_text(replace_section(text, section(res, plots), MARKERS))


def section(res: dict[str, Any], plots: dict[str, str]) -> str:
    meta = res["_meta"]
    lines = [
        MARKERS[0], "## Quality", "",
        f"Measured {meta['date']} on {meta['cores']} cores, {len(meta['seeds'])} seed(s) "
        f"({', '.join(map(str, meta['seeds']))}), mean ± std over seeds, all in one run of "
        f"`{meta['command']}` ({meta['wall_s'] / 60:.1f} min; `bench/results/quality.json`). "
        "Every deployed model is a separate HTTP black box; every patch comes from a training "
        "job (`POST /patches` → `eraser worker`) that queried it; every number below is computed "
        "from `POST /predict` answers on the test split, which nothing was fitted or tuned on.",
        "",
        "Metrics (%, `service.fairness_metrics`): average- and worst-group accuracy over "
        "(target, bias) groups; EO bias = paper Eq. 20, for a multi-valued bias the mean over "
        "target classes of max − min accuracy across bias groups; fairlearn's "
        "`equalized_odds_difference` (EOD) and `demographic_parity_difference` (DPD) as a "
        "cross-check (binary targets only). α: the job's choice per seed. "
        "*ThresholdOptimizer needs each test instance's sensitive attribute at prediction time; "
        "the Eraser does not. Where the gate rejected a patch the gateway keeps serving the raw "
        "model, so that seed's Eraser rows are the raw model's (counted in the table).",
        "", *_targets(res["_targets"]), "",
    ]  # fmt: skip
    for key in SETTINGS:
        if key in res:
            lines += _setting(key, res[key], plots.get(key))
    lines += _protocol(meta)
    lines.append(MARKERS[1])
    return "\n".join(lines)


def _targets(checks: dict[str, dict[str, Any]]) -> list[str]:
    lines = ["Targets (vanilla deployed model, full calibration set, α chosen on calibration "
             "data):", ""]  # fmt: skip
    for dataset, items in checks.items():
        parts = [
            f"{name}: {c['value']:.2f} — {'met' if c['met'] else '**missed**'}"
            for name, c in items.items()
        ]
        lines.append(f"- {dataset}: " + "; ".join(parts))
    return lines


def _cell(row: dict[str, Any], metric: str) -> str:
    if metric not in row:
        return "—"
    std = row.get(f"{metric}_std", 0.0)
    return f"{row[metric]:.2f} ± {std:.2f}" if row["n"] > 1 else f"{row[metric]:.2f}"


def _setting(key: str, rows: dict[str, dict[str, Any]], plot: str | None) -> list[str]:
    lines = [f"### {SETTINGS[key].title}", ""]
    header = "| deployed | calibration | method | avg-group | worst-group | EO bias | accuracy "
    header += "| EOD (fairlearn) | DPD (fairlearn) | α | paper avg / worst / EO |"
    lines += [header, "|---|---|---|---:|---:|---:|---:|---:|---:|---|---|"]
    for row_key, row in rows.items():
        parts = row_key.split(".")
        variant, method = parts[0], parts[-1]
        calibration = f"{row['calibration_rows']} rows" if method != "raw" else "—"
        label = METHOD_LABELS[method]
        if row.get("rejected_by_gate"):
            label += f" ({row['rejected_by_gate']}/{row['n']} rejected by the gate)"
        alpha = ", ".join(f"{a:g}" for a in row.get("alpha", [])) or "—"
        paper = PAPER.get(key, {}).get(row_key)
        paper_text = " / ".join(f"{v:.2f}" for v in paper) if paper else "—"
        cells = [variant, calibration, label, *(_cell(row, m) for m in
                 ("avg", "worst", "eo", "accuracy", "eod_fairlearn", "dpd_fairlearn")),
                 alpha, paper_text]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    floor = rows.get("vanilla.raw", {}).get("eo_floor")
    if floor is not None:
        lines += ["", f"EO noise floor of this test split: {floor:.2f} — the EO bias a classifier "
                  "with equal true accuracy in every group would still measure, from sampling "
                  "noise alone (`bench.quality.metrics.eo_noise_floor`)."]  # fmt: skip
    if plot:
        lines += ["", f"![{SETTINGS[key].title}]({plot})"]
    return [*lines, ""]


def _protocol(meta: dict[str, Any]) -> list[str]:
    return [
        "Protocol. Training split → 5/6 trains the deployed model, 1/6 is the calibration set; "
        "the small calibration set is 160 rows of it (stratified by target and bias). "
        "COMPAS: the vendored ProPublica slice (5,278 rows), race an input of the deployed "
        "model, fixed 20% test split. Adult: UCI's train/test files, rows with missing values "
        "dropped, sex an input. Colored MNIST: mnist_5k, white digits on a background colour "
        "(one per class; the digit's own colour with probability ρ, otherwise one of the other "
        "nine), 3×28×28 with 0–255 pixels; the 1,000 test digits are each shown in all ten "
        "colours (100 images per (digit, colour) group). Deployed models (PyTorch, served as "
        "ONNX by the black box): tabular MLP 64-32, CNN 32-64-128; *vanilla* = cross-entropy, "
        "*unfair* = multi-task with a second head predicting the bias attribute. Patches: the "
        "job's defaults (`TrainingJobSpec`), the seed set to the run's seed.",
        "",
        "Reproduce: `make bench-quality` (quick check: `python -m bench.quality --quick`, one "
        "seed, COMPAS only). Phases (s): "
        + ", ".join(f"{k} {v:.0f}" for k, v in meta["phases_s"].items())
        + " (deployed models are cached in `.cache/bench-quality` between runs).",
        "",
    ]
