"""`python -m bench.ab --base REV`: the gateway at an earlier commit against this checkout.

Run-to-run spread on a shared 2-core machine is larger than most code changes, so comparing two
`make bench-perf` runs says little. Here both gateways run at the same time, in front of the
same stand-in, and are measured in the same interleaved rounds: the fast scenario (instant
upstream, the MLP-32 patch, 1 and 32 clients) and the slow one (a ≈20 ms upstream and a ≈10 ms
patch, 1 client). REV is checked out into a git worktree under ``.cache/ab/``; its gateway runs
with this checkout's virtualenv.
"""

from __future__ import annotations

import argparse
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np

from bench.common import PREDICT_HEADERS, PREFIX, V2_INFER, v2_body
from bench.loadgen import choose_generator
from bench.measure import Bench, Scenario
from bench.patches import calibrate_heavy, small_patch
from bench.servers import activate_patch, gateway, standin
from deploy.local.processes import CACHE, ROOT, clear_redis_prefix

SLOW_DELAY_MS = 19.0  # the stand-in's sleep that gave a ≈20 ms direct p50 in bench-perf runs


@contextmanager
def worktree(rev: str) -> Iterator[Path]:
    """REV checked out beside this one (removed afterwards)."""
    path = CACHE / "ab" / rev.replace("/", "_")
    subprocess.run(
        ["git", "worktree", "remove", "--force", str(path)], cwd=ROOT, capture_output=True
    )
    subprocess.run(
        ["git", "worktree", "add", "-q", "--detach", str(path), rev], cwd=ROOT, check=True
    )
    try:
        yield path
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=ROOT, check=True)


def compare(
    base: Path, body: bytes, patch: bytes, delay_ms: float, clients: list[int], bench: Bench
) -> dict:
    """Both gateways (own registry prefixes) before one stand-in; loads by scenario key."""
    with ExitStack() as stack:
        up = stack.enter_context(standin(delay_ms))
        scenarios = [Scenario("direct_c1", up.url + V2_INFER, body, 1, up.pid)]
        for label, tree in (("base", base), ("head", ROOT)):
            prefix = f"{PREFIX}-ab-{label}"
            clear_redis_prefix(prefix)
            stack.callback(clear_redis_prefix, prefix)
            gw = stack.enter_context(gateway(up.url, f"ab-{label}", tree=tree, prefix=prefix))
            activate_patch(gw.url, "ab", patch, body)
            scenarios += [
                Scenario(f"{label}_c{c}", gw.url + V2_INFER, body, c, gw.pid) for c in clients
            ]
        loads, _ = bench.measure(scenarios)
    return loads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="git revision to compare against")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from blackbox.data import compas_split, load_compas

    data = load_compas()
    split = compas_split(data)
    row: np.ndarray = data.X[split.test][:1]
    name, generate = choose_generator("auto")
    bench = Bench(generate, PREDICT_HEADERS, args.seconds, warm_s=2.0, rounds=args.rounds)
    print(f"generator {name}; {args.seconds:g} s × {args.rounds} interleaved rounds", flush=True)
    with worktree(args.base) as base:
        fast = compare(base, v2_body(row), small_patch(data.X[split.calib], data.y[split.calib]),
                       0.0, [1, 32], bench)  # fmt: skip
        heavy = calibrate_heavy(row, 10.0)
        slow = compare(base, v2_body(row), heavy.blob, SLOW_DELAY_MS, [1], bench)
    print(
        f"\nbase = {args.base}, head = this checkout; heavy patch {heavy.meta()['patch_ms']:.2f} ms"
    )
    for title, loads in (
        ("instant upstream, MLP-32 patch", fast),
        ("≈20 ms upstream ∥ ≈10 ms patch", slow),
    ):
        print(title)
        for key, load in loads.items():
            ms = f"p50 {load.p50_ms:7.3f} ms  p99 {load.p99_ms:7.3f} ms"
            print(f"  {key:10} {ms}  {load.rps:8.1f} req/s")


if __name__ == "__main__":
    main()
