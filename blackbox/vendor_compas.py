"""One-off: vendor a small, processed COMPAS slice into ``blackbox/data/compas.csv.gz``.

Why a vendored slice: tests and the demo must run on a user's machine without the shared raw
data folder, and the stand-in black box needs a real, biased data set to be a credible target.
Run once: ``python -m blackbox.vendor_compas /path/to/compas-scores-two-years.csv.gz``.
Pure stdlib (csv, gzip) so it runs without pandas.
"""

from __future__ import annotations

import csv
import gzip
import io
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from blackbox.data import FEATURE_NAMES

FEATURES = FEATURE_NAMES
OUTPUT_COLUMNS: tuple[str, ...] = (*FEATURES, "race", "two_year_recid")
RACES: frozenset[str] = frozenset({"African-American", "Caucasian"})
DEFAULT_OUT = Path(__file__).parent / "data" / "compas.csv.gz"


def _keep(row: dict[str, str]) -> bool:
    """ProPublica's cleaning (their R notebook); rows with no screening gap are dropped, as in R."""
    gap = row["days_b_screening_arrest"]
    return (
        gap != ""
        and -30 <= int(float(gap)) <= 30
        and row["is_recid"] != "-1"
        and row["c_charge_degree"] != "O"
        and row["score_text"] != "N/A"
        and row["race"] in RACES
    )


def _encode(row: dict[str, str]) -> list[str]:
    """Map the kept row to numeric features (charge: F=1, M=0; sex: Male=1) plus race and target."""
    out = [str(int(row[c])) for c in FEATURES[:5]]
    out.append("1" if row["c_charge_degree"] == "F" else "0")
    out.append("1" if row["sex"] == "Male" else "0")
    out.append(row["race"])
    out.append(str(int(row["two_year_recid"])))
    return out


def _rows(reader: Iterable[list[str]], header: list[str]) -> Iterator[dict[str, str]]:
    """Yield dicts keyed by the *first* occurrence of each column (the file repeats a few)."""
    first: dict[str, int] = {}
    for i, name in enumerate(header):
        first.setdefault(name, i)
    for values in reader:
        yield {name: values[i] for name, i in first.items()}


def vendor(src: Path, dst: Path = DEFAULT_OUT) -> int:
    """Write the processed slice; mtime=0 keeps the gzip byte-identical across runs."""
    with gzip.open(src, "rt", newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        kept = [_encode(r) for r in _rows(reader, header) if _keep(r)]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(OUTPUT_COLUMNS)
    writer.writerows(kept)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(dst, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
        gz.write(buf.getvalue().encode("utf-8"))
    return len(kept)


def main(argv: list[str]) -> None:
    """CLI: ``vendor_compas.py SRC [DST]``."""
    if not 1 <= len(argv) <= 2:
        raise SystemExit("usage: python -m blackbox.vendor_compas SRC.csv.gz [DST.csv.gz]")
    dst = Path(argv[1]) if len(argv) == 2 else DEFAULT_OUT
    n = vendor(Path(argv[0]), dst)
    print(f"wrote {n} rows to {dst} ({dst.stat().st_size} bytes)")


if __name__ == "__main__":
    main(sys.argv[1:])
