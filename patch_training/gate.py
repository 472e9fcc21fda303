"""The validation gate: a patch version may become active only if it helps on rows it was not
fitted on.

"Helps" means the equalized-odds bias (paper Eq. 20) goes down by at least a margin and the
average-group accuracy does not fall by more than a tolerance, both in percentage points and
both measured on calibration rows judged out of fold, with the chosen α. The thresholds
are the job spec's (``GateConfig``).
"""

from __future__ import annotations

from dataclasses import dataclass

from patch_training.metrics import GroupReport
from service.jobs.spec import GateConfig


@dataclass(frozen=True)
class Verdict:
    passed: bool
    reason: str


def judge(raw: GroupReport, fair: GroupReport, cfg: GateConfig) -> Verdict:
    """Pass or fail, with a reason that quotes the numbers either way."""
    r, f = raw.as_percent(), fair.as_percent()
    drop = r["avg_group_acc"] - f["avg_group_acc"]
    reduction = r["eo_bias"] - f["eo_bias"]
    numbers = (
        f"EO bias {r['eo_bias']:.2f} -> {f['eo_bias']:.2f}, "
        f"avg-group acc {r['avg_group_acc']:.2f} -> {f['avg_group_acc']:.2f}"
    )
    if reduction < cfg.min_bias_reduction_pp:
        return Verdict(False, f"bias not reduced by {cfg.min_bias_reduction_pp} points: {numbers}")
    if drop > cfg.max_avg_acc_drop_pp:
        return Verdict(
            False, f"avg-group accuracy fell more than {cfg.max_avg_acc_drop_pp} points: {numbers}"
        )
    return Verdict(True, numbers)
