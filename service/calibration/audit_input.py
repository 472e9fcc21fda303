"""The inputs of a counterfactual bias audit: a data file, the attributes, and optional pairs.

``load_audit_set`` turns the uploaded bytes into the original rows and, per attribute, the
counterfactual rows x̄ of every row, or refuses them with one InvalidAuditInput (422) that
names the problem — before anything is stored or queued. The gateway runs it in the
upload-checking process (it needs pyarrow); the worker runs it again on the stored bytes.

Formats.

- Data file: CSV or Parquet with the model's feature columns (other columns are allowed and
  ignored, except that a column named after an attribute gives each row's group), or NPZ with
  ``x`` [N, *input shape] and optional 1-D arrays named after attributes (groups).
- An attribute that is an input column is set to each of its other values: its values are the
  spec's ``values`` for it, or the distinct values in the data (2 to ``MAX_VALUES``). Binary:
  flipped; more values: a row's change is averaged over the other values.
- Any other attribute (images, or an attribute the model does not take) needs pairs: an NPZ
  with ``x_cf_<attribute>`` (or ``x_cf`` when one attribute uses pairs), shaped
  [N, *input shape] or [N, M, *input shape] (M counterfactuals per row, averaged), row i the
  counterfactual of the data file's row i. An ``x`` array in it, if present, must equal the
  data file's rows (a check that the two files are aligned). The format and its checks are
  ``pairs``, shared with FMD training jobs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from service.calibration.labels import _label_text, label_strings
from service.calibration.pairs import (
    NpzUpload,
    check_queried_rows,
    model_inputs,
    read_pairs,
)
from service.calibration.sniff import detect_format
from service.errors import InvalidAuditInput, InvalidCalibrationSet
from service.jobs.audits import AuditInput, AuditSpec
from service.settings import ModelConfig

MAX_VALUES = 20  # distinct values of an input-column attribute taken from the data
NO_GROUP = "all"
Source = Literal["input_column", "pairs"]


@dataclass(frozen=True, eq=False)
class AuditAttribute:
    name: str
    source: Source
    groups: np.ndarray  # str [N]: the row's own value of the attribute
    x_cf: np.ndarray  # float32 [N, M, *input shape]: M counterfactuals of each row
    values: list[str] | None = None  # input_column: the values it is set to

    @property
    def per_row(self) -> int:
        return int(self.x_cf.shape[1])


@dataclass(frozen=True, eq=False)
class AuditSet:
    x: np.ndarray  # float32 [N, *input shape]
    attributes: list[AuditAttribute]

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def describe(self) -> AuditInput:
        return AuditInput(
            rows=len(self),
            attributes={a.name: a.source for a in self.attributes},
            values={a.name: a.values for a in self.attributes if a.values is not None},
            groups={a.name: _counts(a.groups) for a in self.attributes},
        )


def _counts(groups: np.ndarray) -> dict[str, int]:
    names, counts = np.unique(groups, return_counts=True)
    return {str(g): int(c) for g, c in zip(names, counts, strict=True)}


def load_audit_set(
    data: bytes,
    model: ModelConfig,
    spec: AuditSpec,
    max_rows: int,
    pairs: bytes | None = None,
    filename: str | None = None,
) -> AuditSet:
    """Parse and validate an audit's inputs for ``model`` (see the module docstring)."""
    features = list(model.input.features or ())
    _check_spec(spec, features, model, pairs is not None)
    x, labels = _read_data(data, model, spec.attributes, max_rows, filename)
    in_pairs = [a for a in spec.attributes if a not in features]
    cf = read_pairs(pairs, x, model, in_pairs, InvalidAuditInput) if pairs is not None else {}
    attributes = []
    for name in spec.attributes:
        if name in features:
            attributes.append(
                flipped_counterfactuals(name, x, features.index(name), spec.values.get(name))
            )
        else:
            groups = labels.get(name)
            groups = np.full(len(x), NO_GROUP) if groups is None else groups
            attributes.append(AuditAttribute(name, "pairs", groups, cf[name]))
    check_queried_rows(len(x), [a.per_row for a in attributes], InvalidAuditInput)
    return AuditSet(x=x, attributes=attributes)


def _check_spec(spec: AuditSpec, features: list[str], model: ModelConfig, has_pairs: bool) -> None:
    """Refuse an attribute choice that cannot be audited before the file is read."""
    unknown = sorted(set(spec.values) - set(spec.attributes))
    if unknown:
        raise InvalidAuditInput(
            f"values are given for {unknown}, which are not audited attributes", attribute=unknown
        )
    for name in spec.values:
        if name not in features:
            raise InvalidAuditInput(
                f"values are given for {name!r}, which is not an input column of model "
                f"{model.name!r}: its counterfactuals come from the pairs file",
                attribute=name,
            )
    needs_pairs = [a for a in spec.attributes if a not in features]
    if needs_pairs and not has_pairs:
        inputs = f"inputs: {features}" if features else "its input is an unnamed tensor"
        raise InvalidAuditInput(
            f"attribute {needs_pairs[0]!r} is not an input column of model {model.name!r} "
            f"({inputs}) and no counterfactual pairs were uploaded: upload a pairs NPZ with "
            "x_cf, or audit an input column",
            attribute=needs_pairs[0],
        )
    if has_pairs and not needs_pairs:
        raise InvalidAuditInput(
            f"a pairs file was uploaded, but every attribute {spec.attributes} is an input "
            "column (set to its other values): pairs are for attributes that are not inputs"
        )


# ------------------------------------------------------------------------------ data file


def _read_data(
    data: bytes,
    model: ModelConfig,
    attributes: Sequence[str],
    max_rows: int,
    filename: str | None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """x [N, *shape] float32 and, for attributes that are columns but not inputs, their values."""
    try:
        fmt = detect_format(data, filename)
        if fmt == "zip":
            raise InvalidAuditInput(
                "an audit's data file is CSV, Parquet or NPZ (x plus 1-D attribute arrays); "
                "send images as an NPZ x array"
            )
        if fmt == "npz":
            return _read_npz(data, model, attributes, max_rows)
        return _read_table(data, fmt, model, attributes, max_rows)
    except InvalidCalibrationSet as exc:
        raise InvalidAuditInput(f"data file: {exc.message}", **exc.details) from None


def _read_table(
    data: bytes, fmt: str, model: ModelConfig, attributes: Sequence[str], max_rows: int
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    from service.calibration.tables import open_parquet, read_csv_table, read_parquet_table
    from service.calibration.tabular import numeric_column

    features = list(model.input.features or ())
    if not features:
        raise InvalidAuditInput(
            f"model {model.name!r} takes an unnamed tensor of shape {model.input.shape}: send "
            "the data as an NPZ with an x array"
        )
    if fmt == "csv":
        table = read_csv_table(data, "the CSV file")
        names, rows = table.column_names, table.num_rows
    else:
        file = open_parquet(data)
        names, rows = file.schema_arrow.names, file.metadata.num_rows
    missing = [f for f in features if f not in names]
    if missing:
        raise InvalidAuditInput(
            f"the data file lacks the model's input columns {missing}", missing=missing
        )
    _check_rows(rows, max_rows)
    labelled = [a for a in attributes if a in names and a not in features]
    if fmt != "csv":
        table = read_parquet_table(file, [*features, *labelled])
    x = np.stack([numeric_column(f, table.column(f)) for f in features], axis=1)
    labels = {a: label_strings(a, table.column(a).to_pylist()) for a in labelled}
    return x, labels


def _read_npz(
    data: bytes, model: ModelConfig, attributes: Sequence[str], max_rows: int
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    with NpzUpload(data, "data file", InvalidAuditInput) as npz:
        if "x" not in npz.files:
            raise InvalidAuditInput(f"the data NPZ needs an x array; it holds {npz.files}")
        x = model_inputs(npz.member("x"), model, "x", InvalidAuditInput, per_row=False)
        _check_rows(len(x), max_rows)
        labels = {}
        for name in attributes:
            if name in npz.files:
                values = npz.member(name)
                if values.ndim != 1 or len(values) != len(x) or values.dtype.kind not in "biufUS":
                    raise InvalidAuditInput(
                        f"data NPZ array {name!r} has shape {list(values.shape)} and dtype "
                        f"{values.dtype}: an attribute's groups are 1-D of length {len(x)}",
                        attribute=name,
                    )
                labels[name] = label_strings(name, values.tolist())
    return x, labels


def _check_rows(rows: int, max_rows: int) -> None:
    if rows == 0:
        raise InvalidAuditInput("the data file has no rows")
    if rows > max_rows:
        raise InvalidAuditInput(f"the data file has {rows} rows, more than the limit of {max_rows}")


# ------------------------------------------------------------------------- counterfactuals


def flipped_counterfactuals(
    name: str, x: np.ndarray, column: int, given: list[float] | None = None
) -> AuditAttribute:
    """Every row with the attribute set to each of its other values: [N, k − 1, F]. Also the
    counterfactuals of an FMD training job (``patch_training.jobs.fmd``)."""
    original = x[:, column]
    if given is None:
        domain = np.unique(original)
        if len(domain) < 2:
            raise InvalidAuditInput(
                f"attribute {name!r} takes the single value {_text(domain[0])} in the data: "
                "nothing to set it to; give its values in the spec (values)",
                attribute=name,
            )
        if len(domain) > MAX_VALUES:
            raise InvalidAuditInput(
                f"attribute {name!r} takes {len(domain)} distinct values in the data, more than "
                f"{MAX_VALUES}: a counterfactual sets it to each other value; give the values "
                "(values) or bin the column",
                attribute=name,
            )
    else:
        domain = np.array(given, dtype=np.float32)
        known = np.isin(original, domain)
        if not known.all():
            row = int(np.flatnonzero(~known)[0])
            raise InvalidAuditInput(
                f"attribute {name!r} row {row + 1}: value {_text(original[row])} is not one of "
                f"its values {[_text(v) for v in domain]}",
                attribute=name,
                row=row + 1,
            )
    k = len(domain)
    others = np.broadcast_to(domain, (len(x), k))[domain[None, :] != original[:, None]]
    others = others.reshape(len(x), k - 1)
    x_cf = np.repeat(x[:, None, :], k - 1, axis=1)
    x_cf[:, :, column] = others
    groups = np.array([_text(v) for v in original], dtype=str)
    return AuditAttribute(name, "input_column", groups, x_cf, [_text(v) for v in domain])


def _text(value: float | np.floating) -> str:
    return _label_text(float(value)) or str(value)
