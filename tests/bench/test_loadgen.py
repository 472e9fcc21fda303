"""The load generator's pure parts: the wrk script it writes and the line it reads back."""

from __future__ import annotations

import json
import re

import pytest

from bench.loadgen import Load, parse_wrk, wrk_script


def test_wrk_script_embeds_body_verbatim_even_with_closing_brackets() -> None:
    body = b'{"instances": [[1.0, 2.0]]}'  # "]]" would end a level-0 long string
    script = wrk_script(body, {"Authorization": "Bearer k"})
    match = re.search(r"wrk\.body = \[(=+)\[(.*)\]\1\]", script)
    assert match is not None and match.group(2) == body.decode()
    assert 'wrk.headers["Authorization"] = "Bearer k"' in script
    assert "latency:percentile(99)" in script


def test_parse_wrk_reads_the_done_line_among_wrk_chatter() -> None:
    raw = {"requests": 10, "duration_us": 1e6, "p50_us": 250.0, "p99_us": 900.5,
           "mean_us": 300.0, "errors": 0, "non2xx": 1}  # fmt: skip
    out = "Running 1s test @ http://x\n  1 threads\nWRK_JSON " + json.dumps(raw) + "\n"
    assert parse_wrk(out) == raw
    result = Load.from_raw(raw)
    assert (result.p50_ms, result.p99_ms, result.errors, result.rps) == (0.25, 0.9005, 1, 10.0)
    with pytest.raises(ValueError, match="no WRK_JSON"):
        parse_wrk("Running 1s test")
