"""Bootstrap intervals for the group metrics, resampling within each (target, bias) cell.

Why within cells: the metrics are functions of per-cell accuracies, and a cell is what an
operator's calibration set fixes (how many rows of each group it holds). Resampling whole rows
of the pooled set would let a small group vanish from a draw, and worst-group accuracy or the EO
bias would then be undefined.

Why it is cheap: within a cell, a row is one pattern of correct/incorrect across the compared
predictions (raw and fair: four patterns). Drawing ``n`` rows with replacement is one
multinomial draw over the patterns with the observed frequencies, so ``draws`` resamples of a
cell cost one ``multinomial`` call whatever ``n`` is. Raw and fair are resampled *together*
(paired), so the interval of a change is the interval of the difference on the same rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from service.jobs.spec import Interval

METRICS = ("avg_group_acc", "worst_group_acc", "eo_bias", "accuracy")


@dataclass(frozen=True)
class Cells:
    """The (target, bias) cells of a set of rows: the class of each cell and its row indices."""

    classes: np.ndarray  # [C] target class of each cell
    names: list[str]  # "y=…,b=…", as ``metrics.group_report`` names groups
    members: list[np.ndarray]  # row indices of each cell

    @classmethod
    def of(cls, y: np.ndarray, b: np.ndarray) -> Cells:
        y, b = np.asarray(y), np.asarray(b).astype(str)
        keys = sorted({(int(yy), bb) for yy, bb in zip(y.tolist(), b.tolist(), strict=True)})
        members = [np.flatnonzero((y == yy) & (b == bb)) for yy, bb in keys]
        names = [f"y={yy},b={bb}" for yy, bb in keys]
        return cls(np.array([yy for yy, _ in keys]), names, members)

    @property
    def sizes(self) -> np.ndarray:
        return np.array([len(m) for m in self.members])

    @property
    def comparable(self) -> list[int]:
        """Classes with cells of two or more bias groups: the ones the EO bias averages over."""
        values, counts = np.unique(self.classes, return_counts=True)
        return [int(k) for k, n in zip(values, counts, strict=True) if n >= 2]


def resampled_accuracies(
    cells: Cells, correct: Mapping[str, np.ndarray], draws: int, seed: int
) -> dict[str, np.ndarray]:
    """Per stage, the cells' accuracies in each draw: ``{stage: [draws, C]}`` (fractions).
    ``correct`` maps each stage to a boolean per row; all stages are resampled together."""
    stages = list(correct)
    bits = np.stack([np.asarray(correct[s], dtype=bool) for s in stages], axis=1)  # [N, S]
    patterns = bits @ (1 << np.arange(len(stages)))  # one integer per row: which stages were right
    rng = np.random.default_rng(seed)
    right = {s: np.empty((draws, len(cells.members))) for s in stages}
    for c, rows in enumerate(cells.members):
        freq = np.bincount(patterns[rows], minlength=1 << len(stages)) / len(rows)
        counts = rng.multinomial(len(rows), freq, size=draws)  # [draws, 2^S]
        for i, stage in enumerate(stages):
            mask = (np.arange(len(freq)) >> i) & 1 == 1
            right[stage][:, c] = counts[:, mask].sum(axis=1) / len(rows)
    return right


def metrics_of(acc: np.ndarray, cells: Cells) -> dict[str, np.ndarray]:
    """The group metrics (fractions) for each row of ``acc`` [..., C] (any leading shape).
    Accuracy weights cells by their sizes, which stratified resampling keeps fixed."""
    acc = np.asarray(acc, dtype=np.float64)
    spreads = [
        acc[..., cells.classes == k].max(axis=-1) - acc[..., cells.classes == k].min(axis=-1)
        for k in cells.comparable
    ]
    sizes = cells.sizes
    return {
        "avg_group_acc": acc.mean(axis=-1),
        "worst_group_acc": acc.min(axis=-1),
        "eo_bias": np.mean(spreads, axis=0) if spreads else np.zeros(acc.shape[:-1]),
        "accuracy": (acc * sizes).sum(axis=-1) / sizes.sum(),
    }


def metric_intervals(
    cells: Cells, observed: np.ndarray, resampled: np.ndarray, confidence: float
) -> dict[str, Interval]:
    """Every metric's interval, from the cells' observed accuracies [C] and their resamples
    [draws, C] (``resampled_accuracies``)."""
    point, draws = metrics_of(observed, cells), metrics_of(resampled, cells)
    return {m: interval(float(point[m]), draws[m], confidence) for m in METRICS}


def observed_accuracies(cells: Cells, correct: np.ndarray) -> np.ndarray:
    """[C] accuracy of each cell on the observed rows."""
    return np.array([np.mean(np.asarray(correct)[rows]) for rows in cells.members])


def interval(
    estimate: float, draws: np.ndarray, confidence: float, bounds: tuple[float, float] = (0, 1)
) -> Interval:
    """The basic (reverse-percentile) interval, in percent (``estimate`` and ``draws`` are
    fractions): ``[2·estimate − q_high, 2·estimate − q_low]``, clipped to ``bounds``.

    Why not the plain percentile interval: the EO bias is a max − min of noisy accuracies, so a
    sample's EO is biased upwards (a noise floor), and its bootstrap replicates are biased
    upwards once more. The percentile interval inherits that second bias and leans towards "no
    change" exactly where a patch has brought the gap near zero; reflecting the quantiles around
    the estimate removes it to first order. For the smooth metrics (accuracies) the two agree.
    """
    tail = 100 * (1 - confidence) / 2
    q_low, q_high = np.percentile(draws, [tail, 100 - tail])
    low, high = 2 * estimate - q_high, 2 * estimate - q_low
    return Interval(
        estimate=_pct(estimate),
        low=_pct(min(max(low, bounds[0]), estimate)),
        high=_pct(max(min(high, bounds[1]), estimate)),
    )


def _pct(fraction: float) -> float:
    return round(100 * float(fraction), 4)
