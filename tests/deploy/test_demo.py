"""`make demo` end to end: separate processes over HTTP, Redis registry, held-out COMPAS rows."""

from __future__ import annotations

from deploy.local.demo import run_demo
from service.settings import GatewaySettings
from tests.workers import remove_queue


def test_demo_patch_lowers_equalized_odds_bias_on_held_out_rows(
    key_prefix: str, redis_client: object
) -> None:
    try:
        reports = run_demo(key_prefix)
    finally:  # the demo's training queue is named after its prefix
        remove_queue(GatewaySettings(training={"queue": f"{key_prefix}-training"}))
    raw, fair = reports["raw"], reports["fair"]
    assert fair.eo_bias < raw.eo_bias
    assert fair.worst_group_acc > raw.worst_group_acc
    assert fair.avg_group_acc >= raw.avg_group_acc - 0.015
