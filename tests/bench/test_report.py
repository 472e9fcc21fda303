"""Turning loads into results: rounds, headline numbers, targets, JSON merge and Markdown."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench.loadgen import Load
from bench.markdown import (
    MD_END,
    MD_START,
    TABLE_ROWS,
    markdown_section,
    missing_text,
    per_round,
    replace_section,
    spread_text,
)
from bench.measure import merge_rounds
from bench.report import (
    IMAGE_MODES,
    concurrency_summary,
    image_summary,
    merge_results,
    ratios,
    summarize,
    target_met,
)


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
    assert out["overhead_ratio_p50"] == pytest.approx(0.7 / 0.4, abs=1e-3)
    assert out["p99_ratio_c32"] == 2.0
    assert "workers2_rps_c32" not in out  # that scenario did not run


def test_ratios_compare_with_the_passthrough_and_two_workers_with_one() -> None:
    loads = {"direct_c1": load(0.2, 0.5), "gateway_c1": load(0.8, 1.7),
             "passthrough_c1": load(0.6, 0.9), "gateway_c32": load(8.0, 20.0, 3000),
             "passthrough_c32": load(6.0, 16.0, 4000),
             "workers2_c32": load(7.0, 15.0, 3600)}  # fmt: skip
    out = ratios(loads)
    assert out["overhead_ratio_p50"] == pytest.approx(1.5)
    assert out["p99_ratio_c32"] == pytest.approx(1.25)
    assert out["workers2_rps_c32"] == 3600 and out["workers2_vs_gateway_c32"] == 1.2
    assert (out["workers2_p99_ms_c32"], out["gateway_p99_ms_c32"]) == (15.0, 20.0)
    assert target_met("overhead_ratio_p50", 1.5) is True
    assert target_met("p99_ratio_c32", 1.51) is False
    same = ratios(loads | {"passthrough_c1": load(0.2, 0.9)})  # the proxy added nothing
    assert np.isnan(same["overhead_ratio_p50"])  # undefined, not a made-up figure


def test_image_summary_takes_each_mode_against_the_upstream_called_the_same_way() -> None:
    loads = {}
    for i, mode in enumerate(IMAGE_MODES):
        loads |= {f"image_direct_{mode}_c1": load(2.0 + i, 4.0),
                  f"image_gateway_{mode}_c1": load(3.0 + 2 * i, 7.0),
                  f"image_direct_{mode}_c32": load(30.0, 40.0, 1000),
                  f"image_gateway_{mode}_c32": load(40.0, 60.0, 800)}  # fmt: skip
    out = image_summary(loads)
    assert (out["image_json_p50_ms"], out["image_json_added_p50_ms"]) == (3.0, 1.0)
    assert (out["image_binary_added_p50_ms"], out["image_grpc_added_p50_ms"]) == (2.0, 3.0)
    assert out["image_grpc_added_p99_ms"] == 3.0 and out["image_binary_rps_c32"] == 800
    assert out["image_direct_grpc_rps_c32"] == 1000
    assert out["image_grpc_added_vs_binary_p50_ms"] == 7.0 - 3.0  # gRPC in, binary HTTP out
    assert target_met("image_binary_added_p50_ms", 1.5) is True
    assert target_met("image_grpc_added_p50_ms", 1.51) is False


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
    assert target_met("throughput_vs_passthrough", 0.99) is False
    assert target_met("throughput_vs_passthrough", 1.0) is True
    assert target_met("gateway_rps_c32", 5.0) is None


def test_replace_section_swaps_only_between_markers_or_appends() -> None:
    section = f"{MD_START}\nnew\n{MD_END}"
    text = f"# Benchmarks\n\nintro\n\n{MD_START}\nold\n{MD_END}\n\n## Other\nkept\n"
    assert replace_section(text, section) == text.replace("old", "new")
    assert replace_section("", section) == f"# Benchmarks\n\n{section}\n"
    assert replace_section("# B\n\n## Other\n", section) == f"# B\n\n## Other\n\n{section}\n"


def _res() -> dict:
    """A minimal ``perf.json``: every table key at 1.0, no per-round values."""
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
    return res


def _rounds(*values: tuple[float, float]) -> dict:
    """A scenario as ``perf.json`` keeps it: only its rounds matter here."""
    return {"rounds": [{"p50_ms": p50, "p99_ms": p50 * 2, "rps": rps} for p50, rps in values]}


def test_markdown_section_has_one_row_per_metric_and_says_how_it_calibrated() -> None:
    text = markdown_section(_res())
    assert text.startswith(MD_START) and text.endswith(MD_END)
    assert text.count("\n| ") == len(TABLE_ROWS) + 1  # header + rows (separator starts "|-")
    row = "| Added latency p50, 1 client (v2 route, MLP-32 patch) | 1.00 ms | — | ≤ 1 | yes |"
    assert row in text  # no rounds recorded: no spread shown
    assert "| 1.00 s | 7.10 | ≤ 20 | yes |" in text  # the training job's runs
    assert "20 ms → p50 21.04 ms; 19 ms → p50 20.02 ms" in text
    assert "depth=780" in text and "not within" not in text
    assert "load average was 0.10 at the start and 0.90 at the end" in text
    assert "Median of 1 runs (7.10 s); the job's own stages (s): query 0.10, train 2.80" in text
    assert "The stages add up to 2.90 s of each run; the other 4.20 s" in text


def test_per_round_pairs_each_round_with_its_baselines_round() -> None:
    res = _res()
    res["perf_scenarios"] = {
        "gateway_c1": _rounds((1.0, 900), (1.2, 800)),
        "direct_c1": _rounds((0.25, 4000), (0.2, 4100)),
        "gateway_c32": _rounds((9.0, 3000), (9.5, 2700)),
        "passthrough_c32": _rounds((8.0, 3600), (8.0, 3600)),
    }
    assert per_round(res, "overhead_p50_ms") == pytest.approx([0.75, 1.0])
    assert per_round(res, "overhead_p99_ms") == pytest.approx([1.5, 2.0])
    assert per_round(res, "throughput_vs_passthrough") == pytest.approx([3000 / 3600, 0.75])
    assert per_round(res, "gateway_rps_c32") == [3000, 2700]
    assert per_round(res, "concurrent_p50_ms") is None  # scenario 4 not in this JSON
    assert per_round(res, "patch_ms") is None  # one in-process figure, no rounds
    assert per_round(res, "distill_compas_s") == [7.1]
    table = markdown_section(res)
    assert "| 1.00 × | 0.83 / 0.75 | ≥ 1 |" in table
    assert "| 1.00 req/s | 3000.0 / 2700.0 | — | — |" in table


def test_a_verdict_inside_the_rounds_spread_is_called_noise_with_its_rounds() -> None:
    res = _res() | {"throughput_vs_passthrough": 0.99, "overhead_p50_ms": 0.8}
    res["perf_scenarios"] = {
        "gateway_c1": _rounds((1.0, 900), (1.1, 800), (1.05, 850)),
        "direct_c1": _rounds((0.2, 4000), (0.2, 4100), (0.2, 4000)),
        "gateway_c32": _rounds((9.0, 3800), (9.5, 3700), (9.9, 3500)),
        "passthrough_c32": _rounds((8.0, 3690), (8.0, 3830), (8.0, 3600)),
    }
    lines = spread_text(res)
    ratio = next(x for x in lines if x.startswith("- Throughput at 32 clients"))
    assert "rounds 0.97–1.03 ×, met in 1 of 3" in ratio
    assert "within this machine's noise" in ratio
    latency = next(x for x in lines if x.startswith("- Added latency p50"))
    assert "rounds 0.80–0.90 ms, met in all 3." in latency
    assert "noise" not in latency
    e2e = next(x for x in lines if x.startswith("- End-to-end p50"))
    assert e2e.endswith("(no per-round values recorded).")
    assert any(x.startswith("- COMPAS Eraser job") and "runs 7.10–7.10 s" in x for x in lines)


def test_notes_compute_their_figures_from_the_results() -> None:
    res = _res() | {"gateway_cpu_ms_per_req_c32": 0.3, "passthrough_cpu_ms_per_req_c32": 0.2,
                    "unbatched_cpu_ms_per_req_c32": 0.5, "concurrent_p50_ms": 21.5,
                    "sequential_p50_ms_estimate": 30.2}  # fmt: skip
    text = markdown_section(res)
    assert "0.50 ms of CPU per request, 2.50 × the bare proxy's 0.20 ms" in text
    assert "the gateway spent 0.30 ms per request, 1.50 × the proxy's" in text
    assert "End to end 21.50 ms against ≈30.20 ms" in text
    assert "the patch ran while the upstream worked" in text
    slower = markdown_section(res | {"concurrent_p50_ms": 31.0})
    assert "no overlap shows" in slower and "the patch ran while" not in slower


def test_markdown_only_rewrites_the_section_from_the_json_without_measuring(tmp_path) -> None:
    from bench import perf

    out, md = tmp_path / "perf.json", tmp_path / "BENCHMARKS.md"
    out.write_text(json.dumps(_res()))
    md.write_text(f"# Benchmarks\n\nintro\n\n{MD_START}\nold\n{MD_END}\n")
    perf.main(["--markdown-only", "--out", str(out), "--markdown", str(md)])
    text = md.read_text()
    assert text.startswith("# Benchmarks\n\nintro\n\n") and "old" not in text
    assert markdown_section(_res()) in text
    perf.main(["--markdown-only", "--out", str(out), "--markdown", str(md)])
    assert md.read_text() == text


IMAGE_META = {"date": "d2", "generator": "python", "seconds": 12, "rounds": 3, "warm_s": 2,
              "input_shape": [1, 3, 64, 64], "cnn_widths": [16, 32, 64], "classes": 2,
              "weights": "seeded random (He init), not trained", "upstream_grpc": True,
              "loadavg_1m_start": 0.5, "loadavg_1m_end": 0.7, "patch_ms": 0.11}  # fmt: skip


def test_a_json_without_the_newer_keys_renders_without_them_and_says_so() -> None:
    newer = ("overhead_ratio_p50", "p99_ratio_c32", "workers2_", "gateway_p99_ms_c32", "image_")
    old = {k: v for k, v in _res().items() if not k.startswith(newer)}
    text = markdown_section(old)
    assert "Image 1×3×64×64" not in text and "--workers 2`, 32" not in text
    assert "÷ bare passthrough's" not in text
    assert text.count("\n| ") == sum(key in old for key, _, _ in TABLE_ROWS) + 1
    (line, _) = missing_text(old)
    assert "the ratios to the bare passthrough" in line and "`eraser serve --workers 2`" in line
    assert "the image model" in line
    assert missing_text(_res()) == []
    assert "**Image model.**" not in markdown_section(_res())  # rows without their meta


def test_image_and_workers_notes_and_rows_come_from_the_json() -> None:
    res = _res() | {"image_meta": IMAGE_META, "image_binary_added_p50_ms": 0.7,
                    "image_grpc_added_p50_ms": 1.9, "workers2_rps_c32": 3300.0,
                    "gateway_rps_c32": 3000.0, "workers2_vs_gateway_c32": 1.1}  # fmt: skip
    text = markdown_section(res)
    assert "Added latency at p50, 1 client: JSON 1.00 ms, binary 0.70 ms, gRPC 1.90 ms." in text
    assert "widths 16-32-64" in text and "seeded random (He init), not trained" in text
    assert "(alone 0.11 ms per image: ORT median, 1 thread)" in text
    assert "3300.0 req/s against 3000.0 req/s for one process (1.10 ×)" in text
    row = "| Image over binary tensor data: added latency p50 | 0.70 ms | — | ≤ 1.5 | yes |"
    assert row in text
    assert "| Image over gRPC: added latency p50 | 1.90 ms | — | ≤ 1.5 | **no** |" in text


def test_per_round_of_the_ratio_and_image_rows() -> None:
    res = _res()
    res["perf_scenarios"] = {
        "gateway_c1": _rounds((1.0, 900), (1.2, 800)),
        "direct_c1": _rounds((0.25, 4000), (0.2, 4100)),
        "passthrough_c1": _rounds((0.75, 1000), (0.7, 1000)),
        "gateway_c32": _rounds((9.0, 3000), (9.5, 2700)),
        "passthrough_c32": _rounds((6.0, 3600), (9.5, 3600)),
        "workers2_c32": _rounds((8.0, 3300), (8.0, 2700)),
    }
    res["image_scenarios"] = {
        "image_gateway_grpc_c1": _rounds((3.0, 300), (3.5, 280)),
        "image_direct_grpc_c1": _rounds((2.0, 500), (2.1, 480)),
    }
    assert per_round(res, "overhead_ratio_p50") == pytest.approx([1.5, 2.0])
    assert per_round(res, "p99_ratio_c32") == pytest.approx([1.5, 1.0])  # p99 = 2 × p50 here
    assert per_round(res, "workers2_vs_gateway_c32") == pytest.approx([1.1, 1.0])
    assert per_round(res, "image_grpc_added_p50_ms") == pytest.approx([1.0, 1.4])
    assert per_round(res, "image_grpc_p50_ms") == [3.0, 3.5]
    assert per_round(res, "image_json_p50_ms") is None  # not in this JSON
