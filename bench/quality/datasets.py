"""The three benchmark datasets as arrays, and the paper's split of each (Sec. V, implementation).

Every task has a *training split*, of which the deployed model sees 5/6 and the operator keeps
1/6 as the calibration set, and a *test split* that nothing is fitted or tuned on. A second,
small calibration set (``SMALL_CALIBRATION`` rows, the paper's Fig. 8 size) is drawn from the
calibration set. Inputs are what a client of the deployed model sends: COMPAS and Adult as
numeric feature vectors with the protected attribute among them (the paper's setting: the
deployed model may use it, the Eraser must remove its effect), Colored MNIST as 3×28×28 images
with 0–255 pixel values.

All three are processed slices vendored in the repository: COMPAS in ``blackbox/data``, Adult
and MNIST in ``bench/data`` (``python -m bench.vendor_data`` made them from the raw files; that
folder's README gives their origin, processing and licences).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from blackbox.data import RACES, load_compas, split, with_race_feature

DATA_DIR = Path(__file__).resolve().parents[1] / "data"  # bench/data: adult.npz, mnist_5k.npz
SMALL_CALIBRATION = 160  # about 1/1000 of a paper training set (Fig. 8); 160 here for all
DEPLOYED_SHARE = 5 / 6  # of the training split; the rest is the calibration set


@dataclass(frozen=True)
class Table:
    """Model inputs ``X`` (float32 [N, *shape]), target ``y`` (class indices) and the bias
    attribute ``b`` (strings), aligned row by row."""

    X: np.ndarray
    y: np.ndarray
    b: np.ndarray

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, idx: np.ndarray) -> Table:
        return Table(self.X[idx], self.y[idx], self.b[idx])


@dataclass(frozen=True)
class Task:
    """One dataset at one seed: what the deployed model trains on, the operator's calibration
    sets, and the test split, plus the names a gateway model config and a calibration file use."""

    dataset: str
    train: Table
    calib: Table
    small_calib: Table
    test: Table
    classes: list[str]
    bias_values: list[str]
    target_name: str
    bias_name: str
    feature_names: list[str] | None
    input_shape: tuple[int, ...]
    notes: dict[str, object] = field(default_factory=dict)


def stratified_fraction(y: np.ndarray, b: np.ndarray, n: int, seed: int) -> np.ndarray:
    """About ``n`` row indices, proportionally from every (y, b) cell, at least one per cell:
    the small calibration set must still hold every group the Eraser averages over."""
    rng = np.random.default_rng(seed)
    keys = np.char.add(np.asarray(y).astype(str), np.char.add("|", np.asarray(b).astype(str)))
    picked = []
    for key in np.unique(keys):
        idx = np.flatnonzero(keys == key)
        take = max(1, round(n * len(idx) / len(keys)))
        picked.append(rng.choice(idx, size=min(take, len(idx)), replace=False))
    return np.sort(np.concatenate(picked))


def _deployed_and_calib(table: Table, seed: int) -> tuple[Table, Table, Table]:
    """5/6 for the deployed model, 1/6 for calibration (stratified), and the small subset."""
    strata = np.char.add(table.y.astype(str), np.char.add("|", table.b))
    parts = split(len(table), seed=seed, fractions=(DEPLOYED_SHARE, 1 - DEPLOYED_SHARE, 0.0),
                  strata=strata)  # fmt: skip
    calib = table.subset(parts.calib)
    small = calib.subset(stratified_fraction(calib.y, calib.b, SMALL_CALIBRATION, seed))
    return table.subset(parts.train), calib, small


# --- COMPAS ---------------------------------------------------------------------------------

COMPAS_TEST_SHARE = 0.2


def compas_task(seed: int) -> Task:
    """The vendored ProPublica slice (5,278 rows) with race as an input; a fixed 20% test split
    (seed 0, stratified by target and race), the other 80% split 5/6 : 1/6 by ``seed``."""
    data = with_race_feature(load_compas())
    strata = data.y * 2 + (data.race == RACES[1]).astype(np.int64)
    outer = split(len(data), seed=0, fractions=(1 - COMPAS_TEST_SHARE, 0.0, COMPAS_TEST_SHARE),
                  strata=strata)  # fmt: skip
    full = Table(data.X, data.y, data.race.astype(str))
    train, calib, small = _deployed_and_calib(full.subset(outer.train), seed)
    return Task(
        dataset="compas",
        train=train,
        calib=calib,
        small_calib=small,
        test=full.subset(outer.test),
        classes=["no_recid", "recid"],
        bias_values=list(RACES),
        target_name="two_year_recid",
        bias_name="race",
        feature_names=list(data.feature_names),
        input_shape=(len(data.feature_names),),
    )


# --- outer cross-validation (tabular settings) ----------------------------------------------

OUTER_FOLDS = 5


def outer_task(dataset: str, seed: int, fold: int, data_dir: Path = DATA_DIR) -> Task:
    """Fold ``fold`` of ``OUTER_FOLDS`` is the test split; the other folds split 5/6 : 1/6 into
    the deployed model's rows and the calibration set, as the fixed split does.

    Why: over the folds of one seed every row of the dataset is scored exactly once, so each
    seed's figures rest on all ~5,300 COMPAS (~45,000 Adult) rows instead of one test split,
    which lowers the EO noise floor. Folds are stratified by (target, bias) and shuffled by
    ``seed``; ``notes["test_rows"]`` indexes the pooled table (``pooled_table``)."""
    template, pooled = _pooled(dataset, data_dir)
    folds = outer_folds(pooled, seed)
    test_rows = np.flatnonzero(folds == fold)
    train, calib, small = _deployed_and_calib(pooled.subset(np.flatnonzero(folds != fold)), seed)
    notes = {"fold": fold, "test_rows": test_rows, "pooled_rows": len(pooled)}
    return dataclasses.replace(template, train=train, calib=calib, small_calib=small,
                               test=pooled.subset(test_rows), notes=notes)  # fmt: skip


def outer_folds(table: Table, seed: int) -> np.ndarray:
    """A fold number per row: each (target, bias) cell dealt round-robin after a shuffle."""
    rng = np.random.default_rng(seed)
    keys = np.char.add(table.y.astype(str), np.char.add("|", table.b.astype(str)))
    folds = np.empty(len(table), dtype=np.int64)
    for key in np.unique(keys):
        idx = rng.permutation(np.flatnonzero(keys == key))
        folds[idx] = np.arange(len(idx)) % OUTER_FOLDS
    return folds


def pooled_table(dataset: str, data_dir: Path = DATA_DIR) -> Table:
    """Every labelled row of a tabular dataset, in a fixed order (what outer folds index)."""
    return _pooled(dataset, data_dir)[1]


def _pooled(dataset: str, data_dir: Path) -> tuple[Task, Table]:
    if dataset == "compas":
        data = with_race_feature(load_compas())
        return compas_task(0), Table(data.X, data.y, data.race.astype(str))
    if dataset == "adult":
        task = adult_task(0, data_dir)
        loaded = _load_adult(data_dir)
        train, test = _adult_table(loaded, "train")[0], _adult_table(loaded, "test")[0]
        both = Table(np.concatenate([train.X, test.X]), np.concatenate([train.y, test.y]),
                     np.concatenate([train.b, test.b]))  # fmt: skip
        return task, both
    raise ValueError(f"outer cross-validation covers the tabular settings, not {dataset!r}")


# --- Adult ----------------------------------------------------------------------------------

ADULT_NUMERIC = ("age", "education_num", "hours_per_week")
ADULT_LOG = ("capital_gain", "capital_loss")  # heavy-tailed: log1p, as most Adult pipelines do
ADULT_ONE_HOT = ("workclass", "marital_status", "occupation", "relationship", "race")
ADULT_UNSEEN = 255  # category code of a test value the training split lacks: no one-hot bit


@functools.cache
def _load_adult(data_dir: Path) -> dict[str, np.ndarray]:
    """``adult.npz``: each split's columns as small integers, categories as codes into the
    training split's vocabulary. Cached: every seed's task reads the same file."""
    with np.load(data_dir / "adult.npz", allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def _log1p(values: np.ndarray) -> np.ndarray:
    """``log1p`` of each distinct value as a Python-float scalar (the float64 result of the
    original per-row loop; a vectorised loop may round differently in the last bit)."""
    distinct, inverse = np.unique(values, return_inverse=True)
    table = np.array([np.log1p(float(v)) for v in distinct], dtype=np.float64)
    return table[inverse.reshape(-1)]


def _adult_table(data: dict[str, np.ndarray], split: str) -> tuple[Table, list[str]]:
    """Numeric columns as they are, capital gain and loss as log1p, the categories one-hot in
    the training vocabulary's order, then sex and native country as 0/1 flags."""
    cols = {c: data[f"{split}_{c}"] for c in (*ADULT_NUMERIC, *ADULT_LOG, *ADULT_ONE_HOT)}
    n = len(data[f"{split}_income"])
    names = [*ADULT_NUMERIC, *(f"log_{c}" for c in ADULT_LOG)]
    blocks = [cols[c].astype(np.float64)[:, None] for c in ADULT_NUMERIC]
    blocks += [_log1p(cols[c])[:, None] for c in ADULT_LOG]
    for c in ADULT_ONE_HOT:
        vocab = [str(v) for v in data[f"vocab_{c}"]]
        names += [f"{c}={v}" for v in vocab]
        codes = cols[c].astype(np.int64)
        blocks.append((codes[:, None] == np.arange(len(vocab))[None, :]).astype(np.float64))
    names += ["sex_male", "native_us"]
    sex_male = data[f"{split}_sex_male"]
    blocks += [sex_male.astype(np.float64)[:, None]]
    blocks += [data[f"{split}_native_us"].astype(np.float64)[:, None]]
    X = np.concatenate(blocks, axis=1).astype(np.float32)
    assert X.shape == (n, len(names))
    y = data[f"{split}_income"].astype(np.int64)
    b = np.array(["Female", "Male"], dtype=str)[sex_male]
    return Table(X, y, b), names


def adult_task(seed: int, data_dir: Path = DATA_DIR) -> Task:
    """UCI's own split: ``adult.data`` (30,162 complete rows) is the training split,
    ``adult.test`` (15,060) the test split; bias sex, target income > 50K."""
    data = _load_adult(data_dir)
    full, names = _adult_table(data, "train")
    train, calib, small = _deployed_and_calib(full, seed)
    return Task(
        dataset="adult",
        train=train,
        calib=calib,
        small_calib=small,
        test=_adult_table(data, "test")[0],
        classes=["<=50K", ">50K"],
        bias_values=["Female", "Male"],
        target_name="income",
        bias_name="sex",
        feature_names=names,
        input_shape=(len(names),),
    )


# --- Colored MNIST --------------------------------------------------------------------------

# One background colour per digit class (RGB, 0-255), well apart from each other and from the
# white strokes.
PALETTE = np.array(
    [
        (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
        (145, 30, 180), (70, 240, 240), (240, 50, 230), (128, 128, 0), (0, 0, 128),
    ],
    dtype=np.float32,
)  # fmt: skip
COLOUR_NAMES = [f"colour{k}" for k in range(10)]
MNIST_TEST_PER_CLASS = 100
RHO_TRAIN = 0.99


@functools.cache
def load_mnist(data_dir: Path = DATA_DIR) -> tuple[np.ndarray, np.ndarray]:
    """mnist_5k: 5,000 digits as uint8 [N, 28, 28] and their labels (int64). Cached: every seed
    and colouring starts from the same digits (callers index, never write, these arrays)."""
    with np.load(data_dir / "mnist_5k.npz", allow_pickle=False) as npz:
        return npz["images"], npz["labels"].astype(np.int64)


def colourise(gray: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """White strokes on a coloured background: ``g·255 + (1 − g)·colour`` per channel, rounded
    to 0–255 (what a client would send as an 8-bit image), float32 [N, 3, 28, 28]."""
    g = gray.astype(np.float32)[:, None] / 255.0
    background = PALETTE[colours][:, :, None, None]
    return np.rint(g * 255.0 + (1.0 - g) * background).astype(np.float32)


def biased_colours(y: np.ndarray, rho: float, rng: np.random.Generator) -> np.ndarray:
    """Each digit's own colour with probability ``rho``, otherwise one of the other nine,
    uniformly; ``rho = 0.1`` is uniform over all ten."""
    other = (y + rng.integers(1, 10, size=len(y))) % 10
    return np.where(rng.random(len(y)) < rho, y, other)


def _coloured_table(gray: np.ndarray, y: np.ndarray, colours: np.ndarray) -> Table:
    b = np.array(COLOUR_NAMES, dtype=str)[colours]
    return Table(colourise(gray, colours), y.astype(np.int64), b)


def cmnist_task(
    seed: int,
    data_dir: Path = DATA_DIR,
    rho_train: float = RHO_TRAIN,
    rho_calib: float | None = None,
    augmented: bool = False,
) -> Task:
    """Colored MNIST from mnist_5k: 1,000 test digits (100 per class, fixed), each shown in all
    ten colours (10,000 images: 100 per (digit, colour) group, so worst-group and EO figures
    are stable); the other 4,000 split 5/6 : 1/6 by ``seed``. Training colours follow
    ``rho_train``; calibration colours ``rho_calib`` (default: the same as training — the
    paper's protocol, where the calibration set is part of the biased training data).

    ``augmented``: the dataset is ``cmnist_aug`` and the task also keeps the deployed model's
    grey training digits (``notes["train_gray"]``), which ``deployed.train`` augments and
    colours afresh every epoch (``bench.quality.augment``); the splits, the calibration and
    test sets and the ``train`` table are exactly those of the same seed without it."""
    gray, y = load_mnist(data_dir)
    outer = split(len(y), seed=0, fractions=(0.8, 0.0, 0.2), strata=y)
    rng = np.random.default_rng(seed)
    inner = split(len(outer.train), seed=seed,
                  fractions=(DEPLOYED_SHARE, 1 - DEPLOYED_SHARE, 0.0),
                  strata=y[outer.train])  # fmt: skip
    train_idx, calib_idx = outer.train[inner.train], outer.train[inner.calib]
    rho_c = rho_train if rho_calib is None else rho_calib
    train = _coloured_table(gray[train_idx], y[train_idx],
                            biased_colours(y[train_idx], rho_train, rng))  # fmt: skip
    calib_colours = biased_colours(y[calib_idx], rho_c, rng)
    calib = _coloured_table(gray[calib_idx], y[calib_idx], calib_colours)
    small = calib.subset(stratified_fraction(calib.y, calib.b, SMALL_CALIBRATION, seed))
    test_idx = outer.test
    every = np.repeat(np.arange(10), len(test_idx))
    test = _coloured_table(np.tile(gray[test_idx], (10, 1, 1)), np.tile(y[test_idx], 10), every)
    notes: dict[str, object] = {
        "rho_train": rho_train,
        "rho_calib": rho_c,
        "colouring": "background",
        "paired_test": True,
    }
    if augmented:
        notes["train_gray"] = gray[train_idx]
    # The calibration digits in grey and their colour index: the FMD job's uploaded pairs are
    # these digits in every other colour (``counterfactual.calibration_pairs``).
    notes["calib_gray"] = gray[calib_idx]
    notes["calib_colours"] = calib_colours
    return Task(
        dataset="cmnist_aug" if augmented else "cmnist",
        train=train,
        calib=calib,
        small_calib=small,
        test=test,
        classes=[str(d) for d in range(10)],
        bias_values=list(COLOUR_NAMES),
        target_name="digit",
        bias_name="colour",
        feature_names=None,
        input_shape=(3, 28, 28),
        notes=notes,
    )
