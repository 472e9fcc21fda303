"""Every PromQL expression the deployment ships: dashboard targets and Prometheus rules."""

from __future__ import annotations

import json
from pathlib import Path

import promql_parser
import yaml

from tests.prometheus import RULE_FILES

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "eraser-gateway.json"
# What Grafana puts in place of its variables when every model and attribute is selected.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$model": ".*", "$attribute": ".*"}


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_queries() -> dict[str, str]:
    """``panel title / refId`` → expression, with Grafana's variables substituted."""
    queries = {}
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            queries[f"{panel['title']} / {target['refId']}"] = substitute(target["expr"])
    return queries


def rules() -> list[dict]:
    return [
        rule
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
    ]


def rule_queries() -> dict[str, str]:
    """``record or alert name`` → expression."""
    return {rule.get("record") or rule["alert"]: rule["expr"] for rule in rules()}


def recorded_names() -> set[str]:
    return {rule["record"] for rule in rules() if "record" in rule}


def substitute(expr: str) -> str:
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    return expr


def metric_names(expr: str) -> set[str]:
    """Names of every series an expression selects (parsed, not pattern-matched)."""
    names: set[str] = set()
    _walk(promql_parser.parse(expr), names)
    return names


def _walk(node: object, names: set[str]) -> None:
    if isinstance(node, promql_parser.VectorSelector):
        if node.name:
            names.add(node.name)
        return
    for attr in ("expr", "lhs", "rhs", "param", "vector_selector"):
        child = getattr(node, attr, None)
        if child is not None:
            _walk(child, names)
    for arg in getattr(node, "args", None) or []:
        _walk(arg, names)
