"""The Grafana dashboard and the Prometheus rules, checked without servers: the JSON is what the
typed builders produce, panels use the provisioned datasource, and every query selects only
series that the gateway exports or that a rule records."""

from __future__ import annotations

import yaml
from prometheus_client import CollectorRegistry

from deploy.grafana import dashboard as builder
from service.metrics import GatewayMetrics
from tests.deploy.queries import (
    ROOT,
    dashboard,
    dashboard_queries,
    metric_names,
    recorded_names,
    rule_queries,
)

SUFFIXES = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""]}


def exported_names() -> set[str]:
    """Every sample name the gateway's /metrics can carry."""
    registry = CollectorRegistry()
    GatewayMetrics(registry)
    return {
        family.name + suffix for family in registry.collect() for suffix in SUFFIXES[family.type]
    }


def test_the_committed_dashboard_is_what_the_builder_produces() -> None:
    # Regenerate with: python -m deploy.grafana.dashboard
    assert builder.PATH.read_text() == builder.render()


def test_every_panel_and_query_uses_the_provisioned_prometheus_datasource() -> None:
    provisioned = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"]
    assert [(d["type"], d["uid"]) for d in provisioned] == [("prometheus", builder.DATASOURCE_UID)]
    expected = {"type": "prometheus", "uid": builder.DATASOURCE_UID}
    panels = [p for p in dashboard()["panels"] if p["type"] != "row"]
    assert panels
    for panel in panels:
        assert panel["datasource"] == expected, panel["title"]
        assert panel["targets"], panel["title"]
        assert all(t["datasource"] == expected for t in panel["targets"]), panel["title"]
    for variable in dashboard()["templating"]["list"]:
        assert variable["datasource"] == expected


def test_panel_ids_are_unique_and_panels_do_not_overlap() -> None:
    panels = dashboard()["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells = set()
    for p in panels:
        g = p["gridPos"]
        mine = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not cells & mine, p["title"]
        assert g["x"] + g["w"] <= 24
        cells |= mine


def test_queries_select_only_exported_metrics_or_recorded_series() -> None:
    known = exported_names() | recorded_names()
    for where, expr in (dashboard_queries() | rule_queries()).items():
        unknown = metric_names(expr) - known
        assert not unknown, f"{where}: {unknown}"


def test_the_dashboard_shows_bias_raw_vs_fair_flips_versions_and_hot_loads() -> None:
    used = set().union(*(metric_names(e) for e in dashboard_queries().values()))
    for name in (
        "eraser:bias_spd:rate1h",
        "eraser:bias_dir:rate1h",
        "eraser:bias_demographic_parity_difference:rate1h",
        "eraser:bias_equalized_odds_difference:rate1h",
        "eraser:bias_worst_group_accuracy:rate1h",
        "eraser:flip_share:ratio_rate5m",
        "eraser_active_revision",
        "eraser_active_patch_info",
        "eraser_hotload_total",
        "eraser_stage_duration_seconds_bucket",
        "eraser_upstream_events_total",
    ):
        assert name in used, name


def test_alerts_cover_fair_bias_bands_and_failing_hot_loads() -> None:
    alerts = {name: expr for name, expr in rule_queries().items() if not name.startswith("eraser:")}
    assert 'stage="fair"' in alerts["EraserFairStatisticalParityOutOfBand"]
    assert "> 0.1" in alerts["EraserFairStatisticalParityOutOfBand"]
    assert "< 0.8" in alerts["EraserFairDisparateImpactOutOfBand"]
    assert "> 1.2" in alerts["EraserFairDisparateImpactOutOfBand"]
    assert 'outcome="failure"' in alerts["EraserHotLoadFailing"]
