"""Checking an upstream's scores, whatever protocol carried them.

Every way an answer can be unusable raises ``UpstreamBadResponse`` with a message that says what
the upstream sent: not JSON, not numeric, wrong shape, NaN, or values outside the declared
output kind's range (logits declared as probabilities).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import orjson

from service.errors import UpstreamBadResponse
from service.settings import ModelConfig, OutputKind

_BODY_SNIPPET: Final = 80
# Tolerances for the output-kind sanity checks: loose enough for float16/float32 upstreams,
# tight enough to catch logits declared as probabilities.
_PROB_TOL: Final = 1e-4


def parse_json(body: bytes) -> Any:
    """Parse with orjson; fall back to the stdlib only to read ``NaN``/``Infinity`` literals.

    Python servers that use ``json.dumps`` write non-finite floats as bare ``NaN``, which is not
    JSON and which orjson rejects. Re-parsing on that (rare) error path lets validation report
    "contains NaN" instead of a confusing parse error; the happy path never pays for it.
    """
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        error = str(exc)
    try:
        return json.loads(body)
    except ValueError:
        pass
    raise UpstreamBadResponse(
        f"unparseable JSON body: {error}; body starts with {body[:_BODY_SNIPPET]!r}"
    )


def numeric_array(value: Any, what: str) -> np.ndarray:
    """``value`` as a float64 array, refusing strings, booleans, nulls and ragged lists.

    ``np.asarray`` without a dtype infers float64 for plain numbers at the same cost as a
    forced cast, and lets us reject ``"0.3"`` strings that a forced cast would quietly accept.
    """
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise UpstreamBadResponse(f"{what} is not a rectangular array: {exc}") from None
    if arr.dtype.kind in "fiu":
        return arr.astype(np.float64, copy=False)
    if arr.dtype == object and any(v is None for v in arr.flat):
        raise UpstreamBadResponse(
            f"{what} contains null (how orjson and JavaScript encoders write NaN)"
        )
    sample = next(iter(arr.flat), None) if arr.size else value
    raise UpstreamBadResponse(f"{what} is not numeric (found {sample!r:.40})")


def _check_finite(arr: np.ndarray) -> None:
    if not np.isfinite(arr).all():
        what = "NaN" if np.isnan(arr).any() else "inf"
        raise UpstreamBadResponse(f"upstream output contains {what}")


def _check_kind_range(arr: np.ndarray, kind: OutputKind) -> None:
    """Catch an ``output_kind`` that does not match what the upstream sends (a config error).

    Logits declared as probabilities would otherwise be clamped and renormalised into
    plausible-looking but wrong numbers.
    """
    if arr.size == 0:
        return
    if kind is OutputKind.PROBABILITIES:
        lo, hi = float(arr.min()), float(arr.max())
        if lo < -_PROB_TOL or hi > 1 + _PROB_TOL:
            raise UpstreamBadResponse(
                f"model declares probabilities but upstream values span [{lo:.4g}, {hi:.4g}]; "
                "are these logits?"
            )
    elif kind is OutputKind.LOG_PROBABILITIES and float(arr.max()) > _PROB_TOL:
        raise UpstreamBadResponse(
            f"model declares log_probabilities but upstream values reach {float(arr.max()):.4g} "
            "> 0; are these logits?"
        )


@dataclass(frozen=True, slots=True)
class ScoreSpec:
    """What a valid answer looks like for one model."""

    num_classes: int
    kind: OutputKind

    @property
    def columns(self) -> int:
        """Upstream columns per row: one logit for sigmoid models, else one score per class."""
        return 1 if self.kind is OutputKind.SIGMOID_LOGITS else self.num_classes

    @classmethod
    def of(cls, model: ModelConfig) -> ScoreSpec:
        return cls(num_classes=model.num_classes, kind=model.upstream.output_kind)


def validate_scores(
    value: Any, n: int, spec: ScoreSpec, what: str = "upstream output"
) -> np.ndarray:
    """Scores as float64 [n, columns]; a 1-D answer is one column (a sigmoid model's logits)."""
    arr = numeric_array(value, what)
    if arr.ndim == 1:
        arr = arr.reshape(-1, 1)
    if arr.ndim != 2:
        raise UpstreamBadResponse(f"{what} has shape {list(arr.shape)}; expected [N, K]")
    rows, cols = arr.shape
    if rows != n:
        raise UpstreamBadResponse(f"upstream answered {rows} rows for {n} instances")
    if cols != spec.columns:
        if spec.kind is OutputKind.SIGMOID_LOGITS:
            raise UpstreamBadResponse(
                f"upstream answered {cols} columns, a sigmoid_logits model expects 1"
            )
        raise UpstreamBadResponse(f"upstream answered {cols} classes, model has {spec.num_classes}")
    _check_finite(arr)
    _check_kind_range(arr, spec.kind)
    return arr


def error_note(doc: Any) -> str:
    """The server's own ``error`` field, if any: KServe and Triton explain failures there."""
    if isinstance(doc, dict) and "error" in doc:
        return f" (error: {str(doc['error'])[:200]!r})"
    return ""
