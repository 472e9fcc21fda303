"""CLI: ``python -m bench.reliability [--quick] [--only S,..] [--markdown-only]``.

The full run writes ``bench/results/reliability.json`` and the Reliability section of
``BENCHMARKS.md``; ``--quick`` (what CI runs) takes a few revisions, each fault once and short,
a small fuzz, and writes ``.cache/bench/reliability-quick.json`` only.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import MARKDOWN
from bench.reliability import (
    body_bombs,
    fuzz,
    hotswap,
    poisoned_cache,
    redis_faults,
    tamper,
    upstream,
)
from bench.reliability.markdown import render_section, write_markdown
from bench.reliability.patches import Patches
from bench.reliability.results import RESULTS, meta, write
from bench.reliability.system import System, running_system
from deploy.local.processes import CACHE, ROOT

Scenario = Callable[[System, Patches, np.ndarray, dict[str, Any]], dict[str, Any]]
QUICK_RESULTS = CACHE / "bench" / "reliability-quick.json"
FAULT = {"rate": 220, "fault_s": 10}  # each Redis fault: load (req/s) and how long it lasts
QUICK_FAULT = {"rate": 200, "fault_s": 2}

# In running order: the fuzz goes last (with the admin key it may roll the stack back), the
# empty restart after everything that relies on the registry's history.
SCENARIOS: dict[str, tuple[Scenario, dict[str, Any], dict[str, Any]]] = {
    # name: (run, full settings, --quick settings)
    "hotswap": (hotswap.run, {"revisions": 60, "rate": 220, "quiet_s": 10},
                {"revisions": 5, "rate": 200, "quiet_s": 2}),
    "upstream_restart": (upstream.run, {"down_s": 1.5}, {"down_s": 1.0}),
    "tamper": (tamper.run, {}, {}),
    "poisoned_cache": (poisoned_cache.run, {"rows": 800}, {"rows": 400}),
    "redis_kill": (redis_faults.run_kill, FAULT, QUICK_FAULT),
    "redis_hang": (redis_faults.run_hang, FAULT, QUICK_FAULT),
    "redis_empty_restart": (redis_faults.run_empty, FAULT, QUICK_FAULT),
    "body_bombs": (body_bombs.run, {}, {}),
    "fuzz": (fuzz.run, {"cases": 2000}, {"cases": 100}),
}  # fmt: skip


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.reliability",
        description="Reliability benchmark: faults of Redis and the black box, tampering, "
        "hot-swaps, body bombs and a fuzz, against real processes on loopback.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"the short form CI runs; writes {QUICK_RESULTS.relative_to(ROOT)}",
    )
    parser.add_argument(
        "--only",
        type=_scenarios,
        default=list(SCENARIOS),
        help=f"comma-separated subset of {', '.join(SCENARIOS)}; merged into the existing JSON",
    )
    parser.add_argument("--out", type=Path, help="JSON to write (or read with --markdown-only)")
    parser.add_argument("--markdown", type=Path, default=MARKDOWN)
    parser.add_argument(
        "--markdown-only",
        action="store_true",
        help="measure nothing: re-render the Reliability section from the JSON",
    )
    return parser.parse_args(argv)  # fmt: skip


def _scenarios(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown scenario(s) {unknown}; known: {list(SCENARIOS)}")
    return [n for n in SCENARIOS if n in names]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    # A SIGTERM (CI's timeout, an impatient operator) unwinds like ^C: every process we
    # started is stopped and the temporary directory removed by the ``finally`` blocks.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    out = args.out or (QUICK_RESULTS if args.quick else RESULTS)
    if args.markdown_only:
        import json

        res = json.loads(out.read_text())
        write_markdown(args.markdown, res)
        return res
    measured, durations = run_scenarios(args.only, args.quick)
    measured["_meta"] = meta("quick" if args.quick else "full", durations, argv)
    partial = args.only != list(SCENARIOS)
    merged = write(out, measured, merge=partial)
    if not args.quick:
        write_markdown(args.markdown, merged)
    print(render_section(merged))
    print(f"results: {out}")
    return merged


def run_scenarios(names: list[str], quick: bool) -> tuple[dict[str, Any], dict[str, float]]:
    """Each scenario in order against one system; a scenario that raises is recorded with its
    error (its targets then read "not measured") and the next one still runs."""
    from blackbox.data import compas_split, load_compas

    data = load_compas()
    rows = data.X[compas_split(data, seed=0).test[:64]]
    measured: dict[str, Any] = {}
    durations: dict[str, float] = {}
    patches = Patches()
    start = time.monotonic()
    with running_system() as system:
        durations["start_processes"] = time.monotonic() - start
        for name in names:
            run, full, short = SCENARIOS[name]
            print(f"== {name}", flush=True)
            began = time.monotonic()
            try:
                measured[name] = run(system, patches, rows, short if quick else full)
            except Exception as exc:  # recorded, not hidden: the report shows it
                traceback.print_exc()
                measured[name] = {"error": f"{type(exc).__name__}: {exc}"}
                heal(system)
            durations[name] = time.monotonic() - began
            print(f"   {name}: {durations[name]:.1f} s", flush=True)
    return measured, durations


def heal(system: System) -> None:
    """After a scenario failed half-way: Redis and the stand-in running again, so that the
    next scenario measures its own fault and not the previous one's leftovers."""
    if system.redis.proc is None:
        system.redis.start()
    else:
        system.redis.signal(signal.SIGCONT)
    if system.standin.proc is None:
        system.standin.start()


if __name__ == "__main__":
    main()
