"""The Grafana dashboard, as code: ``python -m deploy.grafana.dashboard`` writes
``deploy/grafana/dashboards/eraser-gateway.json``, which Grafana provisions from the file.

Built with Grafana's own typed builders (grafana-foundation-sdk, generated from Grafana's
schemas), so the JSON has the shape Grafana expects; a test checks that the file is up to date,
that every panel names the provisioned datasource, and that queries use only exported metrics
and recorded series (and, against a real Prometheus, that every query returns data).
"""

from __future__ import annotations

import json
from pathlib import Path

from grafana_foundation_sdk.builders import common, prometheus, stat, table, timeseries
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import (
    BigValueGraphMode,
    LegendDisplayMode,
    LegendPlacement,
)
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    Threshold,
    ThresholdsMode,
    VariableRefresh,
)

DATASOURCE_UID = "eraser-prometheus"  # deploy/grafana/provisioning/datasources/prometheus.yml
DATASOURCE = DataSourceRef(type_val="prometheus", uid=DATASOURCE_UID)
PATH = Path(__file__).parent / "dashboards" / "eraser-gateway.json"

M = 'model=~"$model"'
MA = 'model=~"$model", attribute=~"$attribute"'
RATE = "[$__rate_interval]"


def query(expr: str, legend: str, ref: str = "A") -> prometheus.Dataquery:
    return (
        prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(DATASOURCE)
    )


def series(title: str, description: str, *queries: prometheus.Dataquery) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .height(8)
        .span(12)
        .legend(
            common.VizLegendOptions()
            .show_legend(True)
            .display_mode(LegendDisplayMode.LIST)
            .placement(LegendPlacement.BOTTOM)
        )
    )
    for q in queries:
        panel = panel.with_target(q)
    return panel


def band(low: float | None, high: float | None) -> db.ThresholdsConfig:
    """Green inside [low, high], red outside (TrustyAI's default bands)."""
    steps = [Threshold(value=None, color="red" if low is not None else "green")]
    if low is not None:
        steps.append(Threshold(value=low, color="green"))
    if high is not None:
        steps.append(Threshold(value=high, color="red"))
    return db.ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps(steps)


def quantiles(metric: str, by: str, legend: str) -> list[prometheus.Dataquery]:
    return [
        query(
            f"histogram_quantile({q}, sum by (le, {by}) (rate({metric}_bucket{{{M}}}{RATE})))",
            f"p{int(q * 100)} {legend}",
            ref,
        )
        for q, ref in ((0.5, "A"), (0.99, "B"))
    ]


def traffic_panels() -> list:
    return [
        series(
            "Requests by outcome",
            "Prediction requests per second: debiased, raw (no active stack) or an error code.",
            query(
                f"sum by (model, outcome) (rate(eraser_requests_total{{{M}}}{RATE}))",
                "{{model}} {{outcome}}",
            ),
        ).unit("reqps"),
        series(
            "Latency by stage",
            "Upstream call, patch stack and whole request (p50, p99).",
            *quantiles("eraser_stage_duration_seconds", "model, stage", "{{model}} {{stage}}"),
        ).unit("s"),
        series(
            "Error share",
            "Share of requests that ended in an error, per model.",
            query(
                f'sum by (model) (rate(eraser_requests_total{{{M}, outcome!~"raw|debiased"}}'
                f"{RATE})) / sum by (model) (rate(eraser_requests_total{{{M}}}{RATE}))",
                "{{model}}",
            ),
        ).unit("percentunit"),
        series(
            "Upstream errors by kind",
            "Failed upstream calls per second by error code, retries and breaker openings.",
            query(
                f"sum by (model, event) (rate(eraser_upstream_events_total{{{M}}}{RATE}))",
                "{{model}} {{event}}",
            ),
        ).unit("ops"),
        series(
            "Upstream circuit open",
            "1 while a replica's circuit breaker to the black box is open.",
            query(f"max by (model) (eraser_upstream_breaker_open{{{M}}})", "{{model}}"),
        ).max(1),
        series(
            "Per-patch latency",
            "Inference time of each patch version in the serving stack (p50, p99).",
            *quantiles(
                "eraser_patch_duration_seconds",
                "model, patch, version",
                "{{model}} {{patch}} v{{version}}",
            ),
        ).unit("s"),
    ]


def bias_panels() -> list:
    by_group = "{{attribute}}={{group}} {{stage}}"
    by_attribute = "{{model}} {{attribute}} {{stage}}"
    return [
        series(
            "Statistical parity difference (signed, TrustyAI)",
            "P(positive | group) − P(positive | privileged group) over 1 h, raw vs fair. "
            "Band ±0.1.",
            query(f"eraser:bias_spd:rate1h{{{MA}}}", by_group),
        ).thresholds(band(-0.1, 0.1)),
        series(
            "Disparate impact ratio (signed, TrustyAI)",
            "P(positive | group) / P(positive | privileged group) over 1 h. Band 0.8–1.2.",
            query(f"eraser:bias_dir:rate1h{{{MA}}}", by_group),
        ).thresholds(band(0.8, 1.2)),
        series(
            "Demographic parity difference (fairlearn)",
            "max − min over groups of the positive rate, over 1 h, raw vs fair.",
            query(f"eraser:bias_demographic_parity_difference:rate1h{{{MA}}}", by_attribute),
        ).thresholds(band(None, 0.1)),
        series(
            "Demographic parity ratio (fairlearn)",
            "min / max over groups of the positive rate, over 1 h, raw vs fair.",
            query(f"eraser:bias_demographic_parity_ratio:rate1h{{{MA}}}", by_attribute),
        ).thresholds(band(0.8, None)),
        series(
            "Equalized-odds difference (fairlearn, from feedback)",
            "Worst spread over groups of P(decision = y | y), over true labels y; 1 h.",
            query(f"eraser:bias_equalized_odds_difference:rate1h{{{MA}}}", by_attribute),
        ).thresholds(band(None, 0.1)),
        series(
            "Worst-group accuracy (from feedback)",
            "Lowest accuracy over (true label, group) pairs; 1 h, raw vs fair.",
            query(f"eraser:bias_worst_group_accuracy:rate1h{{{MA}}}", by_attribute),
        ).unit("percentunit"),
        series(
            "Positive rate by group",
            "P(positive decision | group) over 1 h, raw vs fair.",
            query(f"eraser:bias_selection_rate:ratio_rate1h{{{MA}}}", by_group),
        ).unit("percentunit"),
    ]


def patch_panels() -> list:
    return [
        series(
            "Decisions flipped by the patches",
            "Share of debiased decisions whose class differs from the black box's (5 min).",
            query(f"eraser:flip_share:ratio_rate5m{{{M}}}", "{{model}}"),
        ).unit("percentunit"),
        series(
            "Correction size (KL fair ‖ raw)",
            "Per decision, how far the patches moved the black box's distribution (nats).",
            *quantiles("eraser_correction_kl", "model", "{{model}}"),
        ),
        stat.Panel()
        .title("Active stack revision")
        .description("Revision served, per model (max over replicas).")
        .datasource(DATASOURCE)
        .with_target(query(f"max by (model) (eraser_active_revision{{{M}}})", "{{model}}"))
        .graph_mode(BigValueGraphMode.NONE)
        .height(6)
        .span(6),
        table.Panel()
        .title("Active patch versions")
        .description("Patch, version and alpha of the stack each model serves.")
        .datasource(DATASOURCE)
        .with_target(
            query(
                "max by (model, revision, patch, version, alpha) "
                f"(eraser_active_patch_info{{{M}}})",
                "{{patch}} v{{version}}",
            ).instant()
        )
        .show_header(True)
        .height(6)
        .span(18),
        series(
            "Hot-loads",
            "Stack loads per replica by outcome: a failure keeps the previous stack.",
            query(
                f"sum by (model, outcome) (increase(eraser_hotload_total{{{M}}}{RATE}))",
                "{{model}} {{outcome}}",
            ),
        ),
        series(
            "Monitoring store errors",
            "Served-decision store (Redis) failures: monitored answers without a request_id.",
            query(
                f"sum by (operation) (rate(eraser_monitoring_store_errors_total{RATE}))",
                "{{operation}}",
            ),
        ).unit("ops"),
    ]


def build() -> dict:
    model = (
        db.QueryVariable("model")
        .label("Model")
        .datasource(DATASOURCE)
        .query("label_values(eraser_requests_total, model)")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .multi(True)
        .include_all(True)
        .all_value(".*")
    )
    attribute = (
        db.QueryVariable("attribute")
        .label("Protected attribute")
        .datasource(DATASOURCE)
        .query('label_values(eraser_bias_decisions_total{model=~"$model"}, attribute)')
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .multi(True)
        .include_all(True)
        .all_value(".*")
    )
    dashboard = (
        db.Dashboard("Eraser Gateway: traffic and bias, raw vs fair")
        .uid("eraser-gateway")
        .tags(["eraser", "fairness"])
        .time("now-6h", "now")
        .refresh("30s")
        .with_variable(model)
        .with_variable(attribute)
    )
    panel_id = 1
    for i, (title, panels) in enumerate(
        (
            ("Traffic, latency and errors", traffic_panels()),
            ("Bias: raw (black box) vs fair (served)", bias_panels()),
            ("Patches: corrections, versions, hot-loads", patch_panels()),
        )
    ):
        dashboard = dashboard.with_row(db.Row(title).id(100 + i))
        for panel in panels:
            dashboard = dashboard.with_panel(panel.id(panel_id))
            panel_id += 1
    return json.loads(json.dumps(dashboard.build(), cls=JSONEncoder))


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


def main() -> None:
    PATH.write_text(render())
    print(f"wrote {PATH}")


if __name__ == "__main__":
    main()
