"""The vendored COMPAS slice as arrays, plus one deterministic train/calibration/test split.

Every component (stand-in model, patch training, benchmarks, tests) must agree on which rows the
black box was trained on, otherwise "calibration" data would leak into the deployed model and
bias numbers would look better than they are. ``split`` is that single source of truth.
"""

from __future__ import annotations

import csv
import gzip
import io
from dataclasses import dataclass
from importlib import resources

import numpy as np

FEATURE_NAMES: tuple[str, ...] = (
    "age",
    "priors_count",
    "juv_fel_count",
    "juv_misd_count",
    "juv_other_count",
    "c_charge_degree",
    "sex",
)
TARGET = "two_year_recid"
BIAS = "race"
RACES: tuple[str, ...] = ("African-American", "Caucasian")
RACE_FEATURE = "african_american"  # 1.0 / 0.0: race as a model input (the paper's setting)


@dataclass(frozen=True)
class CompasData:
    """Model inputs ``X`` (no race), target ``y`` and the bias attribute ``race`` kept aside."""

    X: np.ndarray  # float32 [N, 7]
    y: np.ndarray  # int64 [N]
    race: np.ndarray  # str [N]
    feature_names: list[str]

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, idx: np.ndarray) -> CompasData:
        """Rows ``idx`` as a new ``CompasData`` (keeps the three arrays aligned)."""
        return CompasData(self.X[idx], self.y[idx], self.race[idx], list(self.feature_names))


@dataclass(frozen=True)
class Split:
    """Disjoint index arrays; ``calib`` is what a patch trainer may use, ``test`` is for reports."""

    train: np.ndarray
    calib: np.ndarray
    test: np.ndarray


def with_race_feature(data: CompasData) -> CompasData:
    """The same rows with race as one more input column (``RACE_FEATURE``), for a deployed model
    that uses the attribute directly, as the Eraser paper's COMPAS models do; ``race`` stays
    the bias attribute."""
    column = (data.race == RACES[0]).astype(np.float32)[:, None]
    names = [*data.feature_names, RACE_FEATURE]
    return CompasData(np.hstack([data.X, column]), data.y, data.race, names)


def load_compas() -> CompasData:
    """Read ``blackbox/data/compas.csv.gz`` through importlib.resources (works from a wheel)."""
    blob = resources.files("blackbox").joinpath("data/compas.csv.gz").read_bytes()
    text = gzip.decompress(blob).decode("utf-8")
    reader = csv.DictReader(io.StringIO(text))
    rows = list(reader)
    X = np.array([[float(r[c]) for c in FEATURE_NAMES] for r in rows], dtype=np.float32)
    y = np.array([int(r[TARGET]) for r in rows], dtype=np.int64)
    race = np.array([r[BIAS] for r in rows], dtype=str)
    return CompasData(X=X, y=y, race=race, feature_names=list(FEATURE_NAMES))


def split(
    n: int,
    seed: int = 0,
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
    strata: np.ndarray | None = None,
) -> Split:
    """Deterministic train/calibration/test indices for ``n`` rows.

    With ``strata`` (e.g. ``y * 2 + (race == "Caucasian")``) each stratum is split in the same
    proportions, so every (target, group) cell is present in the small calibration set: the
    Eraser's group means need non-empty cells.
    """
    if len(fractions) != 3 or min(fractions) < 0 or not np.isclose(sum(fractions), 1.0):
        raise ValueError(f"fractions must be three non-negative numbers summing to 1: {fractions}")
    rng = np.random.default_rng(seed)
    labels = np.zeros(n, dtype=np.int64) if strata is None else np.asarray(strata)
    if labels.shape != (n,):
        raise ValueError(f"strata must have shape ({n},), got {labels.shape}")
    parts: tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]] = ([], [], [])
    for value in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == value))
        cut1 = round(len(idx) * fractions[0])
        cut2 = cut1 + round(len(idx) * fractions[1])
        for part, chunk in zip(parts, (idx[:cut1], idx[cut1:cut2], idx[cut2:]), strict=True):
            part.append(chunk)
    train, calib, test = (np.sort(np.concatenate(p)) for p in parts)
    return Split(train=train, calib=calib, test=test)


def compas_split(data: CompasData, seed: int = 0) -> Split:
    """The project's standard COMPAS split: 60/20/20, stratified by (target, race)."""
    strata = data.y * 2 + (data.race == RACES[1]).astype(np.int64)
    return split(len(data), seed=seed, strata=strata)


def compas_calibration_csv(data: CompasData, idx: np.ndarray) -> bytes:
    """Rows ``idx`` as an operator's calibration file: the model's features, the target and the
    bias column, with class names as labels (what ``POST /patches`` expects)."""
    from blackbox.model import CLASSES

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*data.feature_names, TARGET, BIAS])
    for i in idx:
        features = [f"{v:g}" for v in data.X[i]]
        writer.writerow([*features, CLASSES[int(data.y[i])], data.race[i]])
    return out.getvalue().encode()
