"""`make demo` end to end: separate processes over HTTP, Redis registry, held-out COMPAS rows."""

from __future__ import annotations

from deploy.local.demo import run_demo


def test_demo_patch_lowers_equalized_odds_bias_on_held_out_rows(
    key_prefix: str, redis_client: object
) -> None:
    reports = run_demo(key_prefix)
    raw, fair = reports["raw"], reports["fair"]
    assert fair.eo_bias < raw.eo_bias
    assert fair.worst_group_acc > raw.worst_group_acc
    assert fair.avg_group_acc >= raw.avg_group_acc - 0.015
