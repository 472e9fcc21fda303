"""The Performance section of ``BENCHMARKS.md``, regenerated between markers on every full run.

Only the text between the markers is replaced, so hand-written sections around it survive.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.report import TARGETS, target_met

MD_START, MD_END = "<!-- perf:start -->", "<!-- perf:end -->"

TABLE_ROWS: tuple[tuple[str, str, str], ...] = (
    # key, label, unit
    ("overhead_p50_ms", "Added latency p50, 1 client (v2 route, MLP-32 patch)", "ms"),
    ("overhead_p99_ms", "Added latency p99, 1 client", "ms"),
    ("overhead_p50_ms_c32", "Added latency p50, 32 clients", "ms"),
    ("overhead_p99_ms_c32", "Added latency p99, 32 clients", "ms"),
    ("predict_overhead_p50_ms", "Added latency p50, 1 client, `/predict`", "ms"),
    ("passthrough_overhead_p50_ms", "Added latency p50, 1 client, bare passthrough", "ms"),
    ("throughput_vs_passthrough", "Throughput at 32 clients ÷ bare passthrough", "×"),
    (
        "throughput_vs_passthrough_unbatched",
        "… the same with the gateway's dynamic batching off",
        "×",
    ),
    ("gateway_rps_c32", "Gateway throughput, 32 clients", "req/s"),
    ("passthrough_rps_c32", "Passthrough throughput, 32 clients", "req/s"),
    ("direct_rps_c32", "Stand-in upstream alone, 32 clients", "req/s"),
    ("unbatched_rps_c32", "Gateway throughput, 32 clients, batching off", "req/s"),
    ("gateway_cpu_ms_per_req_c32", "Gateway process CPU per request, 32 clients", "ms"),
    ("unbatched_cpu_ms_per_req_c32", "… with batching off", "ms"),
    ("passthrough_cpu_ms_per_req_c32", "Passthrough process CPU per request, 32 clients", "ms"),
    ("direct_cpu_ms_per_req_c32", "Stand-in process CPU per request, 32 clients", "ms"),
    ("concurrent_p50_ms", "End-to-end p50, 20 ms upstream ∥ ≈10 ms patch, 1 client", "ms"),
    ("upstream_p50_ms", "… that upstream alone, p50", "ms"),
    ("concurrent_overhead_p50_ms", "… end-to-end p50 − upstream p50", "ms"),
    ("patch_ms", "… that patch alone (ORT median, 1 thread)", "ms"),
    ("sequential_p50_ms_estimate", "… sequential would be ≈ upstream p50 + patch", "ms"),
    ("concurrent_passthrough_p50_ms", "… bare passthrough (no patch) on that upstream, p50", "ms"),
    ("upstream_delay_ms", "… the stand-in's calibrated sleep", "ms"),
    ("distill_compas_s", "COMPAS Eraser job end to end, 1,000 rows (`eraser train eraser`)", "s"),
)


def markdown_section(res: dict[str, Any]) -> str:
    """The Performance section: metric, measured, target, met?, then how it was measured."""
    meta = res["perf_meta"]
    return "\n".join([
        MD_START, "## Performance", "",
        f"Measured {meta['date']} on {meta['cores']} cores ({meta['cpu']}), generator "
        f"`{meta['generator']}`, {meta['seconds']:g} s per scenario in {meta['rounds']} "
        f"interleaved round(s) after a {meta['warm_s']:g} s warm-up, all in one run "
        "(`bench/results/perf.json`; percentiles are medians over rounds). "
        "Added latency = percentile through "
        "the gateway − the same percentile calling the stand-in upstream directly (1-row OIP v2 "
        "body, same generator). The stand-in, the gateway and the generator share the machine; "
        f"its 1-min load average was {meta['loadavg_1m_start']:.2f} at the start and "
        f"{meta['loadavg_1m_end']:.2f} at the end (other work on it would show there).",
        "", *table(res), "", concurrency_text(res), "", distill_text(res), "",
        "Reproduce: `make bench-perf` (smoke run: `python -m bench.perf --quick`).", MD_END,
    ])  # fmt: skip


def table(res: dict[str, Any]) -> list[str]:
    """One row per ``TABLE_ROWS`` entry, with its target and whether it was met."""
    lines = ["| metric | measured | target | met? |", "|---|---:|---:|:---:|"]
    for key, label, unit in TABLE_ROWS:
        value, met = res[key], target_met(key, res[key])
        cells = [label, f"{value:.2f} {unit}", _target_text(key)]
        cells.append("—" if met is None else ("yes" if met else "**no**"))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def concurrency_text(res: dict[str, Any]) -> str:
    """How scenario 4's upstream and patch were calibrated: the rows mean little without it."""
    heavy = res["heavy_patch"]
    return (
        f"Concurrency scenario ({heavy['batch']}-row body, 1 client). "
        f"{_upstream_text(res['upstream_calibration'])} Patch: "
        f"`bench.heavy_patch(width={heavy['width']}, depth={heavy['depth']})` "
        f"({heavy['bytes'] / 1e3:.0f} kB: tied weights, cost linear in depth), its depth "
        f"calibrated in-process to ≈10 ms at the {heavy['batch']}-row batch sent, with the ORT "
        f"options the gateway uses (CPU, 1 intra-op thread): median {heavy['patch_ms']:.2f} ms. "
        f"Run one after the other they would take ≈{res['sequential_p50_ms_estimate']:.1f} ms "
        "(upstream p50 + patch); the gateway runs them concurrently. Gateways run with their "
        "default runtime settings."
    )


def distill_text(res: dict[str, Any]) -> str:
    """What the training-job row covers, and its runs' stage timings."""
    runs = res["distill_compas"]["runs"]
    stages = "; ".join(
        ", ".join(f"{k} {v:.2f}" for k, v in run["stages_s"].items()) for run in runs
    )
    walls = ", ".join(f"{run['wall_s']:.2f}" for run in runs)
    return (
        f"Training job: `eraser train eraser` as a fresh process on "
        f"{res['distill_compas']['rows']} COMPAS calibration rows against the stand-in (own "
        "process, HTTP), output cache cleared before each run; the wall time covers interpreter "
        "and PyTorch start-up, validating and storing the file, querying the black box, "
        "training with early stopping, α tuning, ONNX export with its parity check, the report "
        f"and the registration. Median of {len(runs)} runs ({walls} s); the job's own stages "
        f"(s): {stages}."
    )


def _upstream_text(cal: dict[str, Any]) -> str:
    target, first = cal["target_ms"], cal["tries"][0]
    tries = "; ".join(f"{t['delay_ms']:g} ms → p50 {t['p50_ms']:.2f} ms" for t in cal["tries"])
    outcome = ("" if cal["converged"] else
               f" (not within ±{cal['tolerance_ms']:g} ms after {len(cal['tries'])} tries: "
               "the closest one is used)")  # fmt: skip
    return (
        f"Upstream: the stand-in, its sleep calibrated so that, called directly at c=1 with that "
        f"body, its p50 is {target:g} ms (±{cal['tolerance_ms']:g}): a {first['delay_ms']:g} ms "
        f"sleep alone gives {first['p50_ms']:.2f} ms, as timer granularity and request handling "
        f"come on top. From there each try measured the direct p50 over {cal['probe_s']:g} s "
        f"(after a 1 s warm-up), set sleep −= (p50 − {target:g}) rounded to whole ms (the "
        "stand-in's uvloop timers round to whole ms anyway) and restarted the stand-in, at most "
        f"{cal['max_tries']} tries, stopping early when the sleep would not change ({tries}). The "
        f"scenario ran with a {cal['delay_ms']:g} ms sleep{outcome}; the upstream p50 in the "
        "table is from the scenario's own interleaved rounds."
    )


def _target_text(key: str) -> str:
    if key not in TARGETS:
        return "—"
    op, value = TARGETS[key]
    return f"{'≤' if op == '<=' else '≥'} {value:g}"


def replace_section(
    text: str, section: str, markers: tuple[str, str] = (MD_START, MD_END)
) -> str:
    """Swap the text between ``markers`` (the perf ones by default), or append the section if
    there is none."""
    start, end = text.find(markers[0]), text.find(markers[1])
    if start != -1 and end > start:
        return text[:start] + section + text[end + len(markers[1]) :]
    base = text.rstrip("\n") if text.strip() else "# Benchmarks"
    return f"{base}\n\n{section}\n"


def write_markdown(path: Path, res: dict[str, Any]) -> None:
    """Regenerate the section in ``path`` (created if missing)."""
    text = path.read_text() if path.exists() else ""
    path.write_text(replace_section(text, markdown_section(res)))
