"""Turning loads into results: rounds, headline numbers, targets, JSON merge and Markdown."""

from __future__ import annotations

import pytest

from bench.loadgen import Load
from bench.markdown import MD_END, MD_START, TABLE_ROWS, markdown_section, replace_section
from bench.measure import merge_rounds
from bench.report import concurrency_summary, merge_results, summarize, target_met


def load(p50: float, p99: float, requests: int = 100, seconds: float = 1.0) -> Load:
    return Load(requests, seconds, p50, p99, mean_ms=p50, errors=0)


def test_merge_rounds_adds_counts_and_takes_median_percentiles() -> None:
    merged = merge_rounds([load(1.0, 3.0), load(9.0, 50.0, requests=50), load(2.0, 4.0)])
    assert (merged.p50_ms, merged.p99_ms) == (2.0, 4.0)  # the noisy round does not decide
    assert merged.requests == 250 and merged.duration_s == 3.0
    assert merged.mean_ms == pytest.approx((100 * 1.0 + 50 * 9.0 + 100 * 2.0) / 250)


def test_summarize_takes_differences_against_the_direct_upstream() -> None:
    loads = {"direct_c1": load(0.2, 0.5), "gateway_c1": load(0.9, 1.7),
             "predict_c1": load(1.0, 2.0), "passthrough_c1": load(0.6, 0.9),
             "direct_c32": load(5.0, 9.0, 5000), "gateway_c32": load(8.0, 20.0, 3000),
             "passthrough_c32": load(6.0, 10.0, 4000),
             "unbatched_c32": load(9.0, 25.0, 2000)}  # fmt: skip
    out = summarize(loads)
    assert (out["overhead_p50_ms"], out["overhead_p99_ms"]) == (0.7, 1.2)
    assert out["throughput_vs_passthrough"] == 0.75 and out["gateway_rps_c32"] == 3000
    assert out["throughput_vs_passthrough_unbatched"] == 0.5


def test_concurrency_summary_reports_overlap_against_a_sequential_estimate() -> None:
    loads = {"slow_gateway_c1": load(21.0, 23.0), "slow_direct_c1": load(20.1, 20.6),
             "slow_passthrough_c1": load(20.5, 21.0)}  # fmt: skip
    out = concurrency_summary(loads, patch_ms=10.2, delay_ms=18.95)
    assert out["concurrent_overhead_p50_ms"] == pytest.approx(0.9)
    assert out["sequential_p50_ms_estimate"] == pytest.approx(30.3)
    assert (out["upstream_p50_ms"], out["upstream_delay_ms"]) == (20.1, 18.95)


def test_merge_results_keeps_other_benchmarks_keys() -> None:
    old = {"distill_compas_s": 4.2, "overhead_p50_ms": 9.0}
    assert merge_results(old, {"overhead_p50_ms": 0.8}) == {
        "distill_compas_s": 4.2,
        "overhead_p50_ms": 0.8,
    }


def test_target_met_compares_in_the_targets_direction() -> None:
    assert target_met("overhead_p50_ms", 1.0) is True
    assert target_met("overhead_p50_ms", 1.01) is False
    assert target_met("throughput_vs_passthrough", 0.79) is False
    assert target_met("gateway_rps_c32", 5.0) is None


def test_replace_section_swaps_only_between_markers_or_appends() -> None:
    section = f"{MD_START}\nnew\n{MD_END}"
    text = f"# Benchmarks\n\nintro\n\n{MD_START}\nold\n{MD_END}\n\n## Other\nkept\n"
    assert replace_section(text, section) == text.replace("old", "new")
    assert replace_section("", section) == f"# Benchmarks\n\n{section}\n"
    assert replace_section("# B\n\n## Other\n", section) == f"# B\n\n## Other\n\n{section}\n"


def test_markdown_section_has_one_row_per_metric_and_says_how_it_calibrated() -> None:
    res: dict = {key: 1.0 for key, _, _ in TABLE_ROWS}
    res["perf_meta"] = {"date": "d", "cores": 2, "cpu": "c", "generator": "wrk",
                        "seconds": 12, "rounds": 3, "warm_s": 2, "loadavg_1m_start": 0.1,
                        "loadavg_1m_end": 0.9}  # fmt: skip
    res["heavy_patch"] = {"batch": 1, "width": 512, "depth": 780, "bytes": 1_060_000,
                          "mb": 1.06, "patch_ms": 10.1}  # fmt: skip
    res["upstream_calibration"] = {"target_ms": 20.0, "tolerance_ms": 0.25, "probe_s": 3.0,
                                   "step_ms": 1.0, "max_tries": 3,
                                   "tries": [{"delay_ms": 20.0, "p50_ms": 21.04},
                                             {"delay_ms": 19.0, "p50_ms": 20.02}],
                                   "delay_ms": 19.0, "converged": True}  # fmt: skip
    run = {"wall_s": 7.1, "stages_s": {"query": 0.1, "train": 2.8}}
    res["distill_compas"] = {"rows": 1000, "target_s": 20.0, "runs": [run]}
    text = markdown_section(res)
    assert text.startswith(MD_START) and text.endswith(MD_END)
    assert text.count("\n| ") == len(TABLE_ROWS) + 1  # header + rows (separator starts "|-")
    assert "| Added latency p50, 1 client (v2 route, MLP-32 patch) | 1.00 ms | ≤ 1 | yes |" in text
    assert "20 ms → p50 21.04 ms; 19 ms → p50 20.02 ms" in text
    assert "depth=780" in text and "not within" not in text
    assert "load average was 0.10 at the start and 0.90 at the end" in text
    assert "Median of 1 runs (7.10 s); the job's own stages (s): query 0.10, train 2.80" in text
