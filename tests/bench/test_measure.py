"""CPU accounting of a benchmark target."""

from __future__ import annotations

import os
import time

from bench.measure import process_cpu_seconds


def test_process_cpu_seconds_grows_with_work() -> None:
    before = process_cpu_seconds(os.getpid())
    deadline = time.process_time() + 0.1
    while time.process_time() < deadline:
        pass
    assert process_cpu_seconds(os.getpid()) - before >= 0.05
