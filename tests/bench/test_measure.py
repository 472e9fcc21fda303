"""CPU accounting of a benchmark target."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from bench.measure import Bench, Scenario, process_cpu_seconds, tree_cpu_seconds


def test_process_cpu_seconds_grows_with_work() -> None:
    before = process_cpu_seconds(os.getpid())
    deadline = time.process_time() + 0.1
    while time.process_time() < deadline:
        pass
    assert process_cpu_seconds(os.getpid()) - before >= 0.05


def test_tree_cpu_seconds_counts_the_children_a_multi_worker_server_serves_from() -> None:
    spin = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass"
    child = subprocess.Popen([sys.executable, "-c", spin + "\ntime.sleep(30)"])
    try:
        deadline = time.monotonic() + 20
        while process_cpu_seconds(child.pid) < 0.25 and time.monotonic() < deadline:
            time.sleep(0.05)
        own = process_cpu_seconds(os.getpid())
        assert tree_cpu_seconds(os.getpid()) - own >= 0.25  # the child's spin is counted
    finally:
        child.kill()
        child.wait()


def test_a_scenarios_headers_extend_the_benchs_and_win_on_conflict() -> None:
    bench = Bench(lambda *_: {}, {"Authorization": "k", "Content-Type": "application/json"},
                  1.0, 0.1, 1)  # fmt: skip
    binary = Scenario("s", "http://x", b"", 1, headers={"Content-Type": "octet", "H": "1"})
    assert bench.headers_of(binary) == {"Authorization": "k", "Content-Type": "octet", "H": "1"}
    assert bench.headers_of(Scenario("t", "http://x", b"", 1)) == bench.headers
