"""The vendored Adult and MNIST slices in bench/data: the shapes, types and counts its README
documents, and the tables the quality benchmark builds from them."""

from __future__ import annotations

import numpy as np
import pytest

from bench.quality.datasets import ADULT_ONE_HOT, ADULT_UNSEEN, DATA_DIR, adult_task, load_mnist

ADULT_ROWS = {"train": 30_162, "test": 15_060}
ADULT_DTYPES = {
    "age": np.uint8, "education_num": np.uint8, "hours_per_week": np.uint8,
    "capital_gain": np.uint32, "capital_loss": np.uint16,
    **dict.fromkeys(ADULT_ONE_HOT, np.uint8),
    "sex_male": np.uint8, "native_us": np.uint8, "income": np.uint8,
}  # fmt: skip
VOCAB_SIZES = {"workclass": 7, "marital_status": 7, "occupation": 14, "relationship": 6, "race": 5}


@pytest.fixture(scope="module")
def adult() -> dict[str, np.ndarray]:
    with np.load(DATA_DIR / "adult.npz", allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def test_adult_npz_holds_the_documented_columns_and_rows(adult) -> None:
    expected = {f"{s}_{c}" for s in ADULT_ROWS for c in ADULT_DTYPES}
    assert set(adult) == expected | {f"vocab_{c}" for c in ADULT_ONE_HOT}
    for split, n in ADULT_ROWS.items():
        for column, dtype in ADULT_DTYPES.items():
            array = adult[f"{split}_{column}"]
            assert array.dtype == dtype and array.shape == (n,), (split, column)
        for flag in ("sex_male", "native_us", "income"):
            assert set(np.unique(adult[f"{split}_{flag}"])) == {0, 1}
        assert adult[f"{split}_age"].min() >= 17 and adult[f"{split}_age"].max() <= 90
        assert 1 <= adult[f"{split}_education_num"].min() <= adult[f"{split}_education_num"].max()
        assert adult[f"{split}_education_num"].max() <= 16
        for c in ADULT_ONE_HOT:  # codes index the training vocabulary; none unseen
            assert adult[f"{split}_{c}"].max() < len(adult[f"vocab_{c}"]) < ADULT_UNSEEN
    for c, size in VOCAB_SIZES.items():
        vocab = list(adult[f"vocab_{c}"])
        assert len(vocab) == size and vocab == sorted(vocab) and "?" not in vocab
    assert adult["train_income"].sum() == 7_508 and adult["test_income"].sum() == 3_700
    assert adult["train_sex_male"].sum() == 20_380 and adult["test_sex_male"].sum() == 10_147


def test_mnist_npz_is_5000_digits_500_per_class() -> None:
    with np.load(DATA_DIR / "mnist_5k.npz", allow_pickle=False) as npz:
        assert set(npz.files) == {"images", "labels"}
        images, labels = npz["images"], npz["labels"]
    assert images.dtype == np.uint8 and images.shape == (5_000, 28, 28)
    assert labels.dtype == np.uint8 and labels.shape == (5_000,)
    assert np.array_equal(np.bincount(labels, minlength=10), np.full(10, 500))
    assert labels.max() == 9 and images.max() == 255 and images.min() == 0
    gray, y = load_mnist()  # what the benchmark uses: the same digits, labels as int64
    assert np.array_equal(gray, images) and y.dtype == np.int64 and np.array_equal(y, labels)


def test_adult_task_builds_the_feature_table_from_the_vendored_file(adult) -> None:
    task = adult_task(seed=0)
    names = task.feature_names
    assert names is not None and len(names) == 5 + sum(VOCAB_SIZES.values()) + 2 == 46
    assert len(task.train) + len(task.calib) == ADULT_ROWS["train"]
    assert len(task.test) == ADULT_ROWS["test"] and task.test.X.dtype == np.float32
    X = task.test.X
    assert np.array_equal(X[:, names.index("age")], adult["test_age"])
    assert np.array_equal(X[:, names.index("sex_male")], adult["test_sex_male"])
    expected_log = np.log1p(adult["test_capital_gain"].astype(np.float64)).astype(np.float32)
    assert np.array_equal(X[:, names.index("log_capital_gain")], expected_log)
    one_hot = [i for i, n in enumerate(names) if "=" in n]
    assert np.array_equal(X[:, one_hot].sum(axis=1), np.full(len(X), len(ADULT_ONE_HOT)))
    assert set(task.test.b) == {"Female", "Male"} and task.test.y.dtype == np.int64
    assert np.array_equal(task.test.y, adult["test_income"])
    assert np.array_equal(task.test.b == "Male", adult["test_sex_male"] == 1)
