"""The Reliability section of ``BENCHMARKS.md``, rendered from ``bench/results/reliability.json``
by every full run and by ``python -m bench.reliability --markdown-only``. Every figure comes
from the JSON; only the text between the markers is replaced.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.markdown import replace_section

MARKERS = ("<!-- reliability:start -->", "<!-- reliability:end -->")

LABELS: dict[str, str] = {
    "hotswap_failed": "Hot-swaps under load: failed predictions",
    "hotswap_mismatched": "Hot-swaps: answers that differ from their revision's stack",
    "hotswap_convergence_p99_ms": "Hot-swaps: PUT accepted → every replica serving it, p99 (ms)",
    "redis_kill_failed": "Redis killed, restarted from its AOF: failed predictions",
    "redis_kill_mismatched": "Redis killed: answers that differ from their revision's stack",
    "redis_kill_served_last_verified": "Redis killed: replicas serve the last verified revision",
    "redis_hang_failed": "Redis hung (SIGSTOP): failed predictions",
    "redis_hang_mismatched": "Redis hung: answers that differ from their revision's stack",
    "redis_hang_served_last_verified": "Redis hung: replicas serve the last verified revision",
    "redis_empty_restart_failed": "Redis restarted empty: failed predictions",
    "redis_empty_restart_mismatched": "Redis empty: answers differing from their revision's stack",
    "redis_empty_restart_kept_old": "Redis empty: every replica keeps serving the old revision",
    "upstream_recovery_ms": "Black box restarted: its readiness → first 200 on every replica (ms)",
    "tamper_served_tampered": "Tampered registry: cases where a replica served it",
    "tamper_uncounted": "Tampered registry: cases neither counted nor refused",
    "poisoned_cache_versions": "Poisoned black-box cache: versions trained on it",
    "body_bomb_rss_growth_mb": "Body bombs over the route's limit: gateway RSS growth (MB)",
    "body_bomb_not_4xx": "Body bombs answered other than 4xx",
    "fuzz_server_errors": "Fuzzing: 5xx answers",
}


def render_section(res: dict[str, Any]) -> str:
    """The whole section: how it ran, the targets, then each scenario's own figures."""
    meta = res["_meta"]
    lines = [
        MARKERS[0], "## Reliability", "",
        f"Measured {meta['date']} on {meta['cores']} cores ({meta['cpu']}), Redis "
        f"{meta['redis_server']}, {meta['mode']} run of {meta['total_s']:.0f} s "
        "(`bench/results/reliability.json`). Real processes on loopback: a dedicated "
        "`redis-server` with an append-only file, the stand-in black box, three gateway "
        "replicas and, for the poisoned cache, a training worker. Load is open-loop "
        "`/predict` (one instance, `return_raw`) round-robin over the replicas, and every "
        "answer is checked against softmax(log raw − Σ α log G) computed here with ONNX "
        "Runtime for the stack of the revision it names.",
        "", *targets_table(res), "", *scenario_notes(res), "",
        "Reproduce: `make bench-reliability` (short form: `python -m bench.reliability "
        "--quick`; some scenarios: `--only hotswap,tamper`, merged into the same JSON; this "
        "section alone from the JSON: `python -m bench.reliability --markdown-only`).",
        MARKERS[1],
    ]  # fmt: skip
    return "\n".join(lines)


def targets_table(res: dict[str, Any]) -> list[str]:
    lines = ["| check | measured | target | met? |", "|---|---:|---:|:---:|"]
    for name, t in res["_targets"].items():
        target = _value(t["target"]) if t["op"] == "==" else f"≤ {_value(t['target'])}"
        met = "not measured" if t["met"] is None else ("yes" if t["met"] else "**no**")
        lines.append(f"| {LABELS.get(name, name)} | {_value(t['value'])} | {target} | {met} |")
    return lines


def scenario_notes(res: dict[str, Any]) -> list[str]:
    """One paragraph per scenario that ran, its figures read from its record."""
    notes = []
    for name, render in NOTES.items():
        record = res.get(name)
        if record is None:
            continue
        if "error" in record:
            notes += [f"- **{name}** did not complete: `{record['error']}`", ""]
        else:
            notes += [f"- {render(record)}", ""]
    return notes[:-1] if notes else []


def _hotswap(r: dict[str, Any]) -> str:
    return (
        f"**Hot-swaps.** {r['revisions']} stacks (one to three random MLP patches, random α) "
        f"activated one after another by `PUT` on one replica while {r['offered_rps']:.0f} "
        f"req/s went to the three ({r['requests']} requests). Convergence p50 "
        f"{r['convergence_p50_ms']:.1f} ms, p99 {r['convergence_p99_ms']:.1f} ms, max "
        f"{r['convergence_max_ms']:.1f} ms. Prediction latency p50/p99 "
        f"{r['p50_ms_during_swaps']:.2f}/{r['p99_ms_during_swaps']:.2f} ms during the swaps "
        f"against {r['p50_ms_without']:.2f}/{r['p99_ms_without']:.2f} ms in a "
        f"{r['quiet_s']:.0f} s phase without."
    )


def _redis(title: str) -> Any:
    def render(r: dict[str, Any]) -> str:
        after = ", ".join(str(x) for x in r["served_revision_after"])
        return (
            f"**{title}** for {r['fault_s']:.1f} s under {r['offered_rps']:.0f} req/s "
            f"({r['requests']} requests, p99 {r['p99_ms']:.2f} ms): revision "
            f"{r['served_revision_before']} served before, {after} on the replicas after; "
            f"revisions answered {r['revisions_answered']}. Replicas reading the registry "
            f"again {r['registry_back_after_ms']:.0f} ms after Redis answered; "
            f"`eraser_registry_behind` raised on {r['registry_behind']} and readiness "
            f"`problems` on {r['ready_problems']} replicas before the next change, which "
            f"(revision {r['pickup_revision']}) every replica served {r['pickup_ms']:.1f} ms "
            f"after its PUT was accepted; {r['admin_503_after_recovery']} earlier PUT(s) "
            "answered 503 after Redis was back"
            + (f" ({'; '.join(r['admin_503_examples'])})." if r["admin_503_examples"] else ".")
        )

    return render


def _upstream(r: dict[str, Any]) -> str:
    per = ", ".join(_value(x) for x in r["recovery_ms_per_replica"])
    return (
        f"**Black box restart.** Killed, restarted on its port after {r['down_s']:g} s; it was "
        f"ready {r['standin_start_ms']:.0f} ms after the start command. First 200 per replica "
        f"after that: {per} ms (polling every 20 ms). Answers while polling: "
        + ", ".join(f"{k}: {v}" for k, v in r["statuses_while_polling"].items())
        + " (0: no HTTP answer)."
    )


def _tamper(r: dict[str, Any]) -> str:
    cases = "; ".join(
        f"{name} ({'served' if c['served_tampered'] else 'not served'}, "
        f"{'counted' if c['counted'] else '**not counted**'}"
        + (f", PUT {'/'.join(str(s) for s in c['put_status'])}" if c.get("put_status") else "")
        + ")"
        for name, c in r["scenarios"].items()
    )
    return (
        f"**Tampered registry.** {r['cases']} cases, each watched on every replica for a few "
        f"poll intervals: {cases}. Predictions that failed meanwhile: {r['failed']}."
    )


def _poisoned(r: dict[str, Any]) -> str:
    refused = r["cache_entry_refused"] or "none reported"
    return (
        f"**Poisoned black-box cache.** A job on {r['rows']} rows filled the cache; "
        f"{r['entries_poisoned']} entries were rewritten (valid npy, classes swapped, MAC "
        f"kept); the same job again: cached outputs used "
        f"{'yes' if r['second_job_cached_outputs'] else 'no'}, refusal reported: {refused}; "
        f"entries replaced {r['entries_replaced']}; versions registered "
        f"{', '.join(r['versions_registered']) or 'none'}."
    )


def _bombs(r: dict[str, Any]) -> str:
    rows = "; ".join(
        f"{c['method']} {c['path']} ({c['mode']}, limit {c['limit_mb']:g} MB): {c['status']} "
        f"in {c['time_to_answer_ms']:.0f} ms, +{c['rss_growth_mb']:.1f} MB"
        for c in r["cases"]
    )
    return (
        f"**Body bombs** of {r['body_mb']} MB with the right credentials: {rows}. Largest RSS "
        f"growth over all routes, within their limit or not: {_value(r['max_rss_growth_mb_all'])} "
        "MB."
    )


def _fuzz(r: dict[str, Any]) -> str:
    runs = "; ".join(
        f"{key} key: {x['cases']} requests over {x['operations']} operations, "
        f"{x['server_errors']} 5xx"
        + (f" ({'; '.join(x['failures'])})" if x["server_errors"] else "")
        for key, x in r["runs"].items()
    )
    return (
        f"**Fuzzing** (Schemathesis, seed fixed, up to {r['max_examples_per_operation']} "
        f"examples per operation and phase): {runs}."
    )


NOTES = {
    "hotswap": _hotswap,
    "redis_kill": _redis("Redis killed (SIGKILL) and restarted from its AOF"),
    "redis_hang": _redis("Redis hung (SIGSTOP, then SIGCONT)"),
    "redis_empty_restart": _redis("Redis killed and restarted empty"),
    "upstream_restart": _upstream,
    "tamper": _tamper,
    "poisoned_cache": _poisoned,
    "body_bombs": _bombs,
    "fuzz": _fuzz,
}


def _value(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.1f}"
    return str(v)


def write_markdown(path: Path, res: dict[str, Any]) -> None:
    """Regenerate the section in ``path`` (appended at the end when it has none yet)."""
    text = path.read_text() if path.exists() else ""
    path.write_text(replace_section(text, render_section(res), MARKERS))
