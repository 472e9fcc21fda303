"""The Performance section of ``BENCHMARKS.md``, regenerated between markers on every full run
and by ``python -m bench.perf --markdown-only`` (from ``bench/results/perf.json``, measuring
nothing).

Everything in the section is rendered from the JSON: the table, the spread of every figure over
its rounds, and the notes on method, whose figures are computed here rather than typed. Only the
text between the markers is replaced.
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
    ("overhead_ratio_p50", "Added latency p50, 1 client ÷ bare passthrough's", "×"),
    ("throughput_vs_passthrough", "Throughput at 32 clients ÷ bare passthrough", "×"),
    ("p99_ratio_c32", "p99 at 32 clients ÷ bare passthrough's", "×"),
    (
        "throughput_vs_passthrough_unbatched",
        "… the same with the gateway's dynamic batching off",
        "×",
    ),
    ("gateway_rps_c32", "Gateway throughput, 32 clients", "req/s"),
    ("passthrough_rps_c32", "Passthrough throughput, 32 clients", "req/s"),
    ("direct_rps_c32", "Stand-in upstream alone, 32 clients", "req/s"),
    ("unbatched_rps_c32", "Gateway throughput, 32 clients, batching off", "req/s"),
    ("workers2_rps_c32", "Gateway throughput, 32 clients, `--workers 2`", "req/s"),
    ("workers2_vs_gateway_c32", "… ÷ one worker's", "×"),
    ("workers2_p99_ms_c32", "… p99, `--workers 2`, 32 clients", "ms"),
    ("gateway_p99_ms_c32", "… p99, one worker, 32 clients", "ms"),
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
    *(
        row
        for mode, way in (("json", "JSON"), ("binary", "binary tensor data"), ("grpc", "gRPC"))
        for row in (
            (f"image_{mode}_p50_ms", f"Image 1×3×64×64 over {way}: gateway p50, 1 client", "ms"),
            (f"image_direct_{mode}_p50_ms", f"Image over {way}: stand-in directly, p50", "ms"),
            (f"image_{mode}_added_p50_ms", f"Image over {way}: added latency p50", "ms"),
            (f"image_{mode}_p99_ms", f"Image over {way}: gateway p99", "ms"),
            (f"image_{mode}_added_p99_ms", f"Image over {way}: added latency p99", "ms"),
            (f"image_{mode}_rps_c32", f"Image over {way}: gateway, 32 clients", "req/s"),
            (f"image_direct_{mode}_rps_c32", f"Image over {way}: stand-in, 32 clients", "req/s"),
        )
    ),
    (
        "image_grpc_added_vs_binary_p50_ms",
        "Image: gateway over gRPC − stand-in directly over binary tensor data, p50",
        "ms",
    ),
    ("distill_compas_s", "COMPAS Eraser job end to end, 1,000 rows (`eraser train eraser`)", "s"),
    ("distill_100k_s", "The same job on 100,000 resampled rows", "s"),
)


# How each row's value is made from the interleaved rounds in ``perf_scenarios``: the field of
# one round, the scenario it is read from and, optionally, the scenario it is compared with
# (a difference for latencies, a ratio for throughputs). Rows not listed have no per-round value.
ROUND_SOURCES: dict[str, tuple[str, str, str | None]] = {
    "overhead_p50_ms": ("p50_ms", "gateway_c1", "direct_c1"),
    "overhead_p99_ms": ("p99_ms", "gateway_c1", "direct_c1"),
    "overhead_p50_ms_c32": ("p50_ms", "gateway_c32", "direct_c32"),
    "overhead_p99_ms_c32": ("p99_ms", "gateway_c32", "direct_c32"),
    "predict_overhead_p50_ms": ("p50_ms", "predict_c1", "direct_c1"),
    "passthrough_overhead_p50_ms": ("p50_ms", "passthrough_c1", "direct_c1"),
    "throughput_vs_passthrough": ("rps", "gateway_c32", "passthrough_c32"),
    "throughput_vs_passthrough_unbatched": ("rps", "unbatched_c32", "passthrough_c32"),
    "gateway_rps_c32": ("rps", "gateway_c32", None),
    "passthrough_rps_c32": ("rps", "passthrough_c32", None),
    "direct_rps_c32": ("rps", "direct_c32", None),
    "unbatched_rps_c32": ("rps", "unbatched_c32", None),
    "concurrent_p50_ms": ("p50_ms", "slow_gateway_c1", None),
    "upstream_p50_ms": ("p50_ms", "slow_direct_c1", None),
    "concurrent_overhead_p50_ms": ("p50_ms", "slow_gateway_c1", "slow_direct_c1"),
    "concurrent_passthrough_p50_ms": ("p50_ms", "slow_passthrough_c1", None),
    "p99_ratio_c32": ("p99_ms", "gateway_c32", "passthrough_c32"),
    "workers2_rps_c32": ("rps", "workers2_c32", None),
    "workers2_vs_gateway_c32": ("rps", "workers2_c32", "gateway_c32"),
    "workers2_p99_ms_c32": ("p99_ms", "workers2_c32", None),
    "gateway_p99_ms_c32": ("p99_ms", "gateway_c32", None),
} | {
    key: source
    for mode in ("json", "binary", "grpc")
    for key, source in {
        f"image_{mode}_p50_ms": ("p50_ms", f"image_gateway_{mode}_c1", None),
        f"image_direct_{mode}_p50_ms": ("p50_ms", f"image_direct_{mode}_c1", None),
        f"image_{mode}_added_p50_ms": (
            "p50_ms", f"image_gateway_{mode}_c1", f"image_direct_{mode}_c1"
        ),
        f"image_{mode}_p99_ms": ("p99_ms", f"image_gateway_{mode}_c1", None),
        f"image_{mode}_added_p99_ms": (
            "p99_ms", f"image_gateway_{mode}_c1", f"image_direct_{mode}_c1"
        ),
        f"image_{mode}_rps_c32": ("rps", f"image_gateway_{mode}_c32", None),
        f"image_direct_{mode}_rps_c32": ("rps", f"image_direct_{mode}_c32", None),
    }.items()
} | {
    "image_grpc_added_vs_binary_p50_ms": (
        "p50_ms", "image_gateway_grpc_c1", "image_direct_binary_c1"
    ),
}  # fmt: skip
# Rows compared as a ratio although their field is not a throughput.
RATIO_ROWS = frozenset({"p99_ratio_c32"})
# Groups of rows a ``perf.json`` may lack (written before they were measured): said, not faked.
OPTIONAL_GROUPS: tuple[tuple[str, str], ...] = (
    ("overhead_ratio_p50", "the ratios to the bare passthrough"),
    ("workers2_rps_c32", "`eraser serve --workers 2`"),
    ("image_json_p50_ms", "the image model (JSON, binary tensor data, gRPC)"),
)


def markdown_section(res: dict[str, Any]) -> str:
    """The Performance section: metric, measured, each round, target, met?, then how it was
    measured and what the figures say, every figure read from ``res``."""
    meta = res["perf_meta"]
    return "\n".join([
        MD_START, "## Performance", "",
        f"Measured {meta['date']} on {meta['cores']} cores ({meta['cpu']}), generator "
        f"`{meta['generator']}`, {meta['seconds']:g} s per scenario in {meta['rounds']} "
        f"interleaved round(s) after a {meta['warm_s']:g} s warm-up, all in one run "
        "(`bench/results/perf.json`; the training job's row may come from a later one, see "
        "below). Added latency = percentile through the gateway − the same percentile "
        "calling the stand-in upstream directly (1-row OIP v2 body, same generator). The "
        "stand-in, the gateway and the generator share the machine; its 1-min "
        f"load average was {meta['loadavg_1m_start']:.2f} at the start and "
        f"{meta['loadavg_1m_end']:.2f} at the end (other work on it would show there).",
        "", *table(res), "", *missing_text(res),
        "*Measured* merges the rounds (percentiles: the median of the rounds' percentiles; "
        "throughput: all requests over all rounds' time). *Each round* is the same quantity "
        "from one round alone, in round order; a round of every compared scenario runs before "
        "the next round of any, so round *i* of the gateway and round *i* of the baseline it is "
        "compared with were measured seconds apart. For the training job it is each run's "
        "wall time.",
        "", *spread_text(res), "",
        concurrency_text(res) if "concurrent_p50_ms" in res else "", "",
        distill_text(res) if "distill_compas" in res else "", "",
        *scaling_text(res),
        *notes(res),
        "Reproduce: `make bench-perf` (smoke run: `python -m bench.perf --quick`; the training "
        "job alone: `python -m bench.perf --only distill`, the image scenario alone: "
        "`--only image`, each merged into the same JSON; this section alone from the JSON: "
        "`python -m bench.perf --markdown-only`).", MD_END,
    ])  # fmt: skip


def table(res: dict[str, Any]) -> list[str]:
    """One row per ``TABLE_ROWS`` entry, with its rounds, its target and whether it was met."""
    lines = [
        "| metric | measured | each round | target | met? |",
        "|---|---:|---:|---:|:---:|",
    ]
    for key, label, unit in TABLE_ROWS:
        if key not in res:
            continue  # not measured in the run that wrote ``res``: see ``missing_text``
        value, met = res[key], target_met(key, res[key])
        rounds = per_round(res, key)
        each = " / ".join(_fmt(v, unit) for v in rounds) if rounds else "—"
        cells = [label, f"{value:.2f} {unit}", each, _target_text(key)]
        cells.append("—" if met is None else ("yes" if met else "**no**"))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def per_round(res: dict[str, Any], key: str) -> list[float] | None:
    """``key``'s value in each interleaved round (each run for the training job), or ``None``
    when ``res`` does not hold them."""
    if key == "distill_compas_s":
        runs = res.get("distill_compas", {}).get("runs", [])
        return [run["wall_s"] for run in runs] or None
    scenarios = res.get("perf_scenarios", {}) | res.get("image_scenarios", {})
    if key == "overhead_ratio_p50":
        return _added_ratio_rounds(scenarios)
    field, name, base = ROUND_SOURCES.get(key, ("", "", None))
    if name not in scenarios or (base is not None and base not in scenarios):
        return None
    values = [r[field] for r in scenarios[name]["rounds"]]
    if base is None:
        return values
    bases = [r[field] for r in scenarios[base]["rounds"]]
    if field == "rps" or key in RATIO_ROWS:
        return [v / b if b else float("nan") for v, b in zip(values, bases, strict=True)]
    return [v - b for v, b in zip(values, bases, strict=True)]


def _added_ratio_rounds(scenarios: dict[str, Any]) -> list[float] | None:
    """Per round: (gateway − direct) ÷ (passthrough − direct), p50 at 1 client."""
    names = ("gateway_c1", "passthrough_c1", "direct_c1")
    if not all(n in scenarios for n in names):
        return None
    rounds = zip(*(scenarios[n]["rounds"] for n in names), strict=True)
    out = []
    for g, pt, d in rounds:
        den = pt["p50_ms"] - d["p50_ms"]
        out.append((g["p50_ms"] - d["p50_ms"]) / den if den > 0 else float("nan"))
    return out


def missing_text(res: dict[str, Any]) -> list[str]:
    """Which optional groups of rows this JSON does not hold (a run before they existed)."""
    missing = [what for key, what in OPTIONAL_GROUPS if key not in res]
    if not missing:
        return []
    return [f"Not in this JSON, so not shown (measured by the next full run): "
            f"{'; '.join(missing)}.", ""]  # fmt: skip


def spread_text(res: dict[str, Any]) -> list[str]:
    """Each target against the spread of its rounds: a verdict that flips between rounds is
    said to be within this machine's noise, with the rounds it rests on."""
    lines = ["Targets against the spread of their rounds (runs for the training job); speed "
             "targets are reported here, not asserted by the tests:", ""]  # fmt: skip
    labels = {key: (label, unit) for key, label, unit in TABLE_ROWS}
    for key in TARGETS:
        if key not in res or key not in labels:
            continue
        label, unit = labels[key]
        rounds = per_round(res, key)
        head = f"- {label}: {res[key]:.2f} {unit}, target {_target_text(key)}"
        if not rounds:
            lines.append(head + " (no per-round values recorded).")
            continue
        met = sum(bool(target_met(key, v)) for v in rounds)
        span = f"{_fmt(min(rounds), unit)}–{_fmt(max(rounds), unit)} {unit}"
        what = "runs" if key == "distill_compas_s" else "rounds"
        if 0 < met < len(rounds):
            verdict = (f"met in {met} of {len(rounds)}: the target lies inside the spread of "
                       f"the {what}, so the verdict is within this machine's noise and can "
                       "change from run to run")  # fmt: skip
        else:
            verdict = f"{'met' if met else 'missed'} in all {len(rounds)}"
        lines.append(f"{head}; {what} {span}, {verdict}.")
    return lines


def notes(res: dict[str, Any]) -> list[str]:
    """Short notes on method, each figure computed from ``res``."""
    gw, pt = res["gateway_cpu_ms_per_req_c32"], res["passthrough_cpu_ms_per_req_c32"]
    unb = res["unbatched_cpu_ms_per_req_c32"]
    throughput = (
        "**Throughput at 32 clients.** Each server here is one event loop and, at 32 clients, "
        "CPU-bound, so its throughput follows its CPU time per request (read from `/proc` "
        f"around each round). Forwarding one upstream call per request (batching off), the "
        f"gateway spent {unb:.2f} ms of CPU per request, {_ratio(unb, pt)} the bare proxy's "
        f"{pt:.2f} ms (throughput ratio {res['throughput_vs_passthrough_unbatched']:.2f} ×): on "
        "top of the server, the route and the upstream call, which both pay, it validates the "
        "body, builds the tensor, checks the API key, decodes and validates the upstream's "
        "answer, runs ONNX Runtime, does the Eraser maths, renders and updates its metrics. "
        "Dynamic batching (`runtime.batch_max_rows`, on by default) lets requests that arrive "
        "while earlier upstream calls are in flight share the next upstream call and the next "
        f"patch run: with it the gateway spent {gw:.2f} ms per request, {_ratio(gw, pt)} the "
        f"proxy's (throughput ratio {res['throughput_vs_passthrough']:.2f} ×). "
        "A lone request is sent at once, and only requests served by the same stack revision "
        "share a call. The bare passthrough does not batch, so both ratios are reported."
    )
    slow_pt = res["concurrent_passthrough_p50_ms"] - res["upstream_p50_ms"]
    concurrent, sequential = res["concurrent_p50_ms"], res["sequential_p50_ms_estimate"]
    verdict = ("the patch ran while the upstream worked" if concurrent < sequential
               else "no overlap shows")  # fmt: skip
    overlap = (
        f"**Upstream ∥ patch.** End to end {concurrent:.2f} ms against ≈{sequential:.2f} ms for "
        f"the upstream and the patch one after the other: {verdict}. What remains above the "
        f"upstream's own p50 ({res['concurrent_overhead_p50_ms']:.2f} ms) is per-request "
        "overhead; a bare proxy in front of the same slow upstream adds "
        f"{slow_pt:.2f} ms, against {res['passthrough_overhead_p50_ms']:.2f} ms in front of the "
        "instant one. The upstream's own p50 is calibrated only to within "
        f"±{res['upstream_calibration']['tolerance_ms']:g} ms of its target, which moves the "
        "end-to-end p50 by as much."
    )
    compare = (
        "**Runs and revisions.** Rounds of one run share the machine's state; separate runs on "
        "a shared machine spread wider than their rounds, so two runs of `make bench-perf` "
        "compare machines' moments rather than code. `python -m bench.ab --base REV` runs the "
        "gateway at revision REV and this checkout side by side, in front of one stand-in, in "
        "the same interleaved rounds."
    )
    more = [text + "\n" for text in (workers_text(res), image_text(res)) if text]
    return [throughput, "", overlap, "", *more, compare, ""]


def workers_text(res: dict[str, Any]) -> str:
    """``eraser serve --workers 2`` against one process, when measured."""
    if "workers2_rps_c32" not in res:
        return ""
    cpu = res.get("workers2_cpu_ms_per_req_c32", float("nan"))
    return (
        f"**Two workers.** `eraser serve --workers 2` at 32 clients: "
        f"{res['workers2_rps_c32']:.1f} req/s against {res['gateway_rps_c32']:.1f} req/s for "
        f"one process ({res['workers2_vs_gateway_c32']:.2f} ×), p99 "
        f"{res['workers2_p99_ms_c32']:.2f} ms against {res['gateway_p99_ms_c32']:.2f} ms, "
        f"{cpu:.2f} ms of CPU per request over both workers. On this machine's "
        f"{res['perf_meta']['cores']} cores the workers share the CPUs with the stand-in and "
        "the load generator, so a second process can only win what one event loop leaves idle."
    )


def image_text(res: dict[str, Any]) -> str:
    """How the image rows were measured, and what each way of sending the image adds."""
    meta = res.get("image_meta")
    if meta is None or "image_json_p50_ms" not in res:
        return ""
    shape = "×".join(map(str, meta["input_shape"]))
    added = ", ".join(
        f"{way} {res[f'image_{mode}_added_p50_ms']:.2f} ms"
        for mode, way in (("json", "JSON"), ("binary", "binary"), ("grpc", "gRPC"))
    )
    return (
        f"**Image model.** One {shape} FP32 image per request to a small CNN on the stand-in "
        f"(3×3 convolutions of widths {'-'.join(map(str, meta['cnn_widths']))}, 2× max-pool "
        f"after the first two, global average pool, {meta['classes']} classes; weights "
        f"{meta['weights']}: a latency benchmark needs the graph's cost, not what it learned), "
        f"with a small-CNN patch of the same layout in the gateway{_patch_ms(meta)}. Each way "
        "a client can send "
        "the image is measured directly and through the gateway: JSON (every value a JSON "
        "number; the gateway calls the upstream with JSON), binary tensor data (a JSON header "
        "then raw FP32, the output asked for as binary too; the gateway calls the upstream "
        "the same way, `upstream.binary_data`) and gRPC ModelInfer with `raw_input_contents` "
        "(directly: the stand-in's own gRPC endpoint; through the gateway, whose upstream "
        "call is then binary HTTP). Added latency at p50, 1 client: "
        f"{added}. The gRPC figure also holds the difference between the stand-in's gRPC and "
        "HTTP paths, since the gateway reaches the upstream over HTTP; against the stand-in "
        "called directly with binary HTTP, as the gateway calls it, its gRPC route adds "
        f"{res['image_grpc_added_vs_binary_p50_ms']:.2f} ms. All six targets are driven by "
        "the same Python generator (aiohttp; grpc.aio "
        "for gRPC) in its own process — wrk cannot speak gRPC — so these figures are not "
        f"comparable with the tabular rows' wrk figures. Measured {meta['date']}, "
        f"{meta['seconds']:g} s per scenario in {meta['rounds']} interleaved round(s) after a "
        f"{meta['warm_s']:g} s warm-up; 1-min load average {meta['loadavg_1m_start']:.2f} at "
        f"its start and {meta['loadavg_1m_end']:.2f} at its end."
    )


def _patch_ms(meta: dict[str, Any]) -> str:
    if "patch_ms" not in meta:
        return ""
    return f" (alone {meta['patch_ms']:.2f} ms per image: ORT median, 1 thread)"


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


def scaling_text(res: dict[str, Any]) -> list[str]:
    """The distill job's wall time per calibration size (issue 17 §1), with its stages."""
    runs = res.get("distill_scaling", {}).get("runs")
    if not runs:
        return []
    from bench.distill_scaling import ScalingRun, table

    fields = ScalingRun.__dataclass_fields__
    lines = table([ScalingRun(**{k: r[k] for k in fields}) for r in runs]).split("\n")
    return [
        "Training cost against the calibration set's size (`distill_rows_s`): COMPAS calibration "
        "rows resampled with replacement to N, one cold `eraser train eraser` per N (fresh "
        "process, stand-in black box, its cache cleared); above 8,192 rows per fold the fit "
        "follows a step budget (docs/training.md, Large calibration sets). "
        + _when_measured(res["distill_scaling"]),
        "",
        *lines,
        "",
    ]


def distill_text(res: dict[str, Any]) -> str:
    """What the training-job row covers, its runs' stage timings and where the rest goes."""
    runs = res["distill_compas"]["runs"]
    stages = "; ".join(
        ", ".join(f"{k} {v:.2f}" for k, v in run["stages_s"].items()) for run in runs
    )
    walls = ", ".join(f"{run['wall_s']:.2f}" for run in runs)
    own = [sum(run["stages_s"].values()) for run in runs]
    rest = [run["wall_s"] - s for run, s in zip(runs, own, strict=True)]
    return (
        f"Training job: `eraser train eraser` with the job's default spec as a fresh process on "
        f"{res['distill_compas']['rows']} COMPAS calibration rows against the stand-in (own "
        "process, HTTP), output cache cleared before each run; the wall time covers interpreter "
        "and PyTorch start-up, validating and storing the file, querying the black box, "
        "training with early stopping, α tuning, ONNX export with its parity check, the report "
        f"and the registration. Median of {len(runs)} runs ({walls} s); the job's own stages "
        f"(s): {stages}. The stages add up to {_span(own)} s of each run; the other "
        f"{_span(rest)} s are the fresh process (interpreter, PyTorch and the gateway's modules) "
        "and validating and storing the file. A worker (`eraser worker`) imports PyTorch once "
        "before it forks job processes, so a queued job skips most of that start-up. "
        + _when_measured(res["distill_compas"])
    )


def _when_measured(record: dict[str, Any]) -> str:
    """Runs record their date since ``--only distill`` may re-measure this row alone."""
    if "measured_at" in record:
        return f"These runs were measured {record['measured_at']}."
    return (
        "`python -m bench.perf --only distill` re-measures this row alone, and this record "
        "does not say when it ran, so it may come from a later run than the other rows."
    )


def _fmt(value: float, unit: str) -> str:
    return f"{value:.1f}" if unit == "req/s" else f"{value:.2f}"


def _span(values: list[float]) -> str:
    lo, hi = min(values), max(values)
    return f"{lo:.2f}" if f"{lo:.2f}" == f"{hi:.2f}" else f"{lo:.2f}–{hi:.2f}"


def _ratio(num: float, den: float) -> str:
    return f"{num / den:.2f} ×" if den else "—"


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


def replace_section(text: str, section: str, markers: tuple[str, str] = (MD_START, MD_END)) -> str:
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
