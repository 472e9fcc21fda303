"""BENCHMARKS.md: counterfactual bias and the FMD rows (issue 15, §3–4), from ``quality.json``.

One table per setting that has them: the raw model, the Eraser (α chosen), ``cf_average`` (k
upstream calls), the served FMD patch and the Eraser + FMD stack, each with its group and
counterfactual figures; then the FMD targets and the trade-off in words, every figure read from
the results (nothing typed).
"""

from __future__ import annotations

from typing import Any

ROWS = (
    ("vanilla.raw", "raw deployed model", 1),
    ("vanilla.eraser_tuned", "Eraser, α chosen (served)", 1),
    ("vanilla.cf_average", "`cf_average` (black box averaged over the attribute)", None),
    ("vanilla.fmd", 'FMD (`method: "fmd"`, served)', 1),
    ("vanilla.eraser+fmd", "Eraser + FMD stacked (Eq. 21, replayed)", 1),
)
METRICS = ("cf_bias", "eo", "avg", "worst", "accuracy")


def counterfactual_section(res: dict[str, Any], titles: dict[str, str]) -> list[str]:
    """The section, or nothing when no setting has a counterfactual row."""
    settings = [k for k in titles if any(row in res.get(k, {}) for row, _, _ in ROWS[2:])]
    if not settings and not res.get("_audit"):
        return []
    lines = [
        "### Counterfactual bias, `cf_average` and the FMD patch",
        "",
        "Vanilla deployed model, full calibration set; mean ± std over seeds on the test split "
        "(cf bias as in the tables above). `cf_average` answers with the black box's "
        "probabilities averaged over the attribute's values, one upstream call per value (k "
        "below), its x̄ answers from a second, independent pass. FMD is its own job "
        '(`method: "fmd"`, the attribute an input column) on its own gateway model; '
        "Eraser + FMD is that seed's two registered patches stacked by Eq. 21, each at its "
        "job's α, replayed from the signed registry (whatever the gates said).",
        "",
    ]
    for key in settings:
        lines += _table(titles[key], res[key])
        lines += _note(res[key], res.get("_fmd", {}).get("settings", {}).get(key))
    return lines + _audits(res.get("_audit", []), titles)


def _audits(records: list[dict[str, Any]], titles: dict[str, str]) -> list[str]:
    """The product's audit (``POST /audits``) of each seed's vanilla black box, raw stage."""
    if not records:
        return []
    lines = [
        "#### The audit on the deployed vanilla models",
        "",
        "`POST /audits` → `eraser worker` (docs/audit.md) on the test split of each setting's "
        "vanilla black box (seed shown): raw counterfactual bias B and flip share with the "
        "audit's basic bootstrap intervals; rows queried (originals and every x̄) per second "
        "of querying, as the audit reports it.",
        "",
        "| setting | seed | attribute | source | x̄ per row | rows | B raw [interval] | flip "
        "share [interval] | rows queried | rows/s |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in records:
        for name, a in r["attributes"].items():
            b, f = a["bias"], a["flip_share"]
            cells = [titles.get(r["setting"], r["setting"]), str(r["seed"]), f"`{name}`",
                     a["source"], str(a["counterfactuals_per_row"]), str(r["rows"]),
                     f"{b['estimate']:.2f} [{b['low']:.2f}, {b['high']:.2f}]",
                     f"{f['estimate']:.2f} [{f['low']:.2f}, {f['high']:.2f}]",
                     str(r["queried_rows"]),
                     f"{r['rows_per_second']:.0f}" + (" (cached)" if r["cached_outputs"]
                                                       else "")]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def _table(title: str, rows: dict[str, dict[str, Any]]) -> list[str]:
    lines = [
        f"#### {title}",
        "",
        "| method | cf bias | EO bias | avg-group | worst-group | accuracy | upstream calls "
        "per decision | rejected by the gate |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, label, calls in ROWS:
        row = rows.get(key)
        if row is None:
            continue
        k = row.get("upstream_calls_per_decision", calls)
        rejected = f"{row['rejected_by_gate']}/{row['n']}" if "rejected_by_gate" in row else "—"
        cells = [label, *(_cell(row, m) for m in METRICS), str(k), rejected]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def _note(rows: dict[str, dict[str, Any]], details: dict[str, Any] | None) -> list[str]:
    """The trade-off in this setting's own figures."""
    raw, fair = rows.get("vanilla.raw", {}), rows.get("vanilla.eraser_tuned", {})
    avg, fmd = rows.get("vanilla.cf_average"), rows.get("vanilla.fmd")
    if "cf_bias" not in raw or "cf_bias" not in fair:
        return []
    parts = [
        f"The Eraser moved EO bias {raw['eo']:.2f} → {fair['eo']:.2f} and counterfactual bias "
        f"{raw['cf_bias']:.2f} → {fair['cf_bias']:.2f}"
    ]
    if avg is not None and "cf_bias" in avg:
        parts.append(
            f"`cf_average` reached cf bias {avg['cf_bias']:.2f} at "
            f"{avg.get('upstream_calls_per_decision', '?')}× the upstream calls, EO bias "
            f"{avg['eo']:.2f}, average-group accuracy {raw['avg']:.2f} → {avg['avg']:.2f}"
        )
    if fmd is not None and "cf_bias" in fmd:
        parts.append(
            f"the served FMD patch reached cf bias {fmd['cf_bias']:.2f} with one upstream call, "
            f"EO bias {fmd['eo']:.2f}, average-group accuracy {fmd['avg']:.2f}"
        )
    if details and details.get("fmd_candidate", {}).get("cf_bias") is not None:
        parts.append(
            f"replayed whatever the gate said, cf bias {details['fmd_candidate']['cf_bias']:.2f}"
        )
    return ["; ".join(parts) + ".", ""]


def _cell(row: dict[str, Any], metric: str) -> str:
    if metric not in row:
        return "—"
    std = row.get(f"{metric}_std", 0.0)
    return f"{row[metric]:.2f} ± {std:.2f}" if row["n"] > 1 else f"{row[metric]:.2f}"
