"""BENCHMARKS.md is generated: it matches the committed JSON, and nothing in it is typed by hand
but a header without figures.

The JSON files hold what was measured; the file is their rendering. When a generator changes,
re-render without measuring: ``python -m bench.perf --markdown-only``,
``python -m bench.quality --markdown-only`` and ``python -m bench.reliability --markdown-only``.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest

from bench.markdown import MD_END, MD_START, TABLE_ROWS, markdown_section, replace_section
from bench.quality.markdown import MARKERS, plot_paths, section
from bench.reliability.markdown import MARKERS as RELIABILITY_MARKERS
from bench.reliability.markdown import render_section as reliability_section
from bench.report import TARGETS
from deploy.local.processes import ROOT

RESULTS = ROOT / "bench" / "results"
MARKDOWN = ROOT / "BENCHMARKS.md"
RERENDER = (
    "python -m bench.perf --markdown-only && python -m bench.quality --markdown-only && "
    "python -m bench.reliability --markdown-only"
)
BLOCKS = ((MD_START, MD_END), MARKERS, RELIABILITY_MARKERS)


@pytest.fixture(scope="module")
def perf() -> dict[str, Any]:
    return json.loads((RESULTS / "perf.json").read_text())


@pytest.fixture(scope="module")
def quality() -> dict[str, Any]:
    return json.loads((RESULTS / "quality.json").read_text())


@pytest.fixture(scope="module")
def reliability() -> dict[str, Any]:
    return json.loads((RESULTS / "reliability.json").read_text())


def render(
    text: str, perf: dict[str, Any], quality: dict[str, Any], reliability: dict[str, Any]
) -> str:
    """``text`` with every generated section rewritten from the JSON, as the CLIs do."""
    text = replace_section(text, markdown_section(perf))
    text = replace_section(text, section(quality, plot_paths(RESULTS, quality)), MARKERS)
    return replace_section(text, reliability_section(reliability), RELIABILITY_MARKERS)


def outside_blocks(text: str) -> str:
    for start, end in BLOCKS:
        text = re.sub(re.escape(start) + ".*?" + re.escape(end), "", text, flags=re.S)
    return text


def test_benchmarks_md_is_the_rendering_of_the_committed_json(perf, quality, reliability) -> None:
    text = MARKDOWN.read_text()
    for start, end in BLOCKS:
        assert text.count(start) == 1 and text.count(end) == 1
    rendered = render(text, perf, quality, reliability)
    assert rendered == text, f"BENCHMARKS.md is stale: run `{RERENDER}`"


def test_rendering_twice_changes_nothing(perf, quality, reliability) -> None:
    for text in ("", "# Benchmarks\n\nHeader.\n", MARKDOWN.read_text()):
        once = render(text, perf, quality, reliability)
        assert render(once, perf, quality, reliability) == once


def test_no_hand_typed_figure_outside_the_generated_blocks() -> None:
    rest = outside_blocks(MARKDOWN.read_text())
    assert not re.findall(r"\d", rest), "figures belong in the generators, not in BENCHMARKS.md"
    paragraphs = [p for p in rest.split("\n\n") if p.strip() and not p.startswith("#")]
    assert len(paragraphs) <= 1  # at most a one-paragraph header


def test_no_commit_hashes_or_development_history() -> None:
    text = MARKDOWN.read_text()
    hexes = r"(?<![\w/.-])(?=[0-9a-f]*[a-f])(?=[0-9a-f]*\d)[0-9a-f]{7,40}(?![\w/-])"
    assert not re.findall(hexes, text, flags=re.I)
    assert not re.findall(r"\bissues?\s+#?\d+", text, flags=re.I)
    assert not re.findall(r"\bcommit\b|--base [0-9a-f]|\bafternoon\b", text, flags=re.I)


def test_hash_and_history_patterns_catch_what_they_are_for() -> None:
    hexes = r"(?<![\w/.-])(?=[0-9a-f]*[a-f])(?=[0-9a-f]*\d)[0-9a-f]{7,40}(?![\w/-])"
    assert re.findall(hexes, "python -m bench.ab --base 0f352f2")
    assert re.findall(hexes, "at commit 1c91822.")
    assert not re.findall(hexes, "5824.73 req/s, 2026-11-23T14:00:57+00:00, decade")
    assert re.findall(r"\bissues?\s+#?\d+", "work (issues 3 and 5)", flags=re.I)


def test_perf_table_holds_exactly_the_json_figures(perf) -> None:
    """Rows the JSON has show its figure; rows it lacks (measured by later versions of the
    benchmark) are left out, never filled in."""
    lines = MARKDOWN.read_text().splitlines()
    for key, label, unit in TABLE_ROWS:
        rows = [line for line in lines if line.startswith(f"| {label} |")]
        if key not in perf:
            assert rows == [], key
            continue
        assert rows[0].split(" | ")[1] == f"{perf[key]:.2f} {unit}"


def test_quality_tables_hold_exactly_the_json_figures(quality) -> None:
    text = MARKDOWN.read_text()
    for setting, rows in quality.items():
        if setting.startswith("_"):
            continue
        for row in rows.values():
            cells = " | ".join(f"{row[m]:.2f} ± {row[f'{m}_std']:.2f}" for m in
                               ("avg", "worst", "eo", "accuracy"))  # fmt: skip
            assert f"| {cells} |" in text
    for dataset, checks in quality["_targets"].items():
        for c in checks.values():
            assert f": {c['value']:.2f} (per seed" in text, dataset


def test_the_throughput_verdict_shows_the_rounds_it_rests_on(perf) -> None:
    text = markdown_section(perf)
    line = next(x for x in text.splitlines() if x.startswith("- Throughput at 32 clients"))
    rounds = [r["rps"] / p["rps"] for r, p in zip(perf["perf_scenarios"]["gateway_c32"]["rounds"],
              perf["perf_scenarios"]["passthrough_c32"]["rounds"], strict=True)]  # fmt: skip
    assert f"rounds {min(rounds):.2f}–{max(rounds):.2f} ×" in line
    target = TARGETS["throughput_vs_passthrough"][1]
    inside = min(rounds) < target <= max(rounds)
    assert ("within this machine's noise" in line) == inside


def test_quality_notes_follow_the_json(quality) -> None:
    """The notes are computed: move the figures and the text follows."""
    text = section(quality, {})
    floor = quality["compas"]["vanilla.raw"]["eo_floor"]
    assert f"lies below this split's noise floor ({floor:.2f})" in text
    changed = copy.deepcopy(quality)
    changed["compas"]["vanilla.raw"]["eo_floor"] = 2.5
    assert "lies above this split's noise floor (2.50)" in section(changed, {})
    per_seed = re.compile(r"\| (vanilla|unfair) \| \d+ rows \| \d \|")
    per_seed_rows = [x for x in text.splitlines() if per_seed.match(x)]
    assert len(per_seed_rows) == len(quality["_runs"])
    assert text.count("**rejected**") == sum(r["status"] != "validated" for r in quality["_runs"])


def test_reliability_targets_table_holds_exactly_the_json_verdicts(reliability) -> None:
    """Every target row shows the measured value and the verdict computed in the JSON."""
    from bench.reliability.markdown import LABELS, _value

    text = MARKDOWN.read_text()
    for name, target in reliability["_targets"].items():
        row = next(line for line in text.splitlines() if line.startswith(f"| {LABELS[name]} |"))
        cells = row.split(" | ")
        assert cells[1] == _value(target["value"]), name
        met = "not measured" if target["met"] is None else ("yes" if target["met"] else "**no**")
        assert cells[3].rstrip(" |") == met, name
