"""Request instances → the float32 tensor that both the upstream and the patches receive.

Instances are lists (nested to the model's input shape) or, for tabular models with named
features, JSON objects keyed by feature name. Anything else is a 422 naming the first problem.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from service.errors import InvalidInstances
from service.settings import InputSpec


def instances_to_tensor(instances: list[Any], spec: InputSpec, max_batch: int) -> np.ndarray:
    """Convert and validate a batch; the gateway never forwards a malformed tensor upstream."""
    if not instances:
        raise InvalidInstances("instances must be a non-empty list")
    check_batch_size(len(instances), max_batch)
    rows = [_row(i, inst, spec) for i, inst in enumerate(instances)]
    x = as_float32(rows, "instances are not numeric arrays")
    expected = (len(instances), *spec.shape)
    if x.shape != expected:
        raise InvalidInstances(
            f"instances have shape {list(x.shape[1:])}, model expects {spec.shape}"
        )
    check_finite(x)
    return x


def as_float32(values: Any, problem: str) -> np.ndarray:
    """JSON numbers as a float32 array, for both prediction routes.

    Only numbers are numbers: numpy would read ``"1"`` and ``true`` as 1.0, so strings,
    booleans and nulls are refused first. Anything numpy still cannot convert — ragged lists,
    an integer too large for any float (``1`` followed by 400 zeros) — is a 422 that says so;
    values beyond float32's range become infinite and ``check_finite`` refuses them."""
    if not _all_numbers(values):
        raise InvalidInstances(f"{problem}: values must be JSON numbers, not strings, booleans "
                               "or null")  # fmt: skip
    try:
        with np.errstate(over="ignore"):
            return np.asarray(values, dtype=np.float32)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidInstances(f"{problem}: {exc}") from None


_NUMBERS = frozenset({int, float})  # exact types: bool is a subclass of int


def _all_numbers(node: Any) -> bool:
    """Every leaf an int or a float. Innermost lists are checked with one ``set(map(type))``,
    so a large image batch costs a C-speed pass per row, not a Python call per value."""
    if type(node) is not list:
        return type(node) in _NUMBERS
    if node and type(node[0]) is list:
        return all(_all_numbers(child) for child in node)
    return set(map(type, node)) <= _NUMBERS


def check_batch_size(n: int, max_batch: int) -> None:
    """The per-request limit, for every route that accepts a batch."""
    if n > max_batch:
        raise InvalidInstances(f"{n} instances exceed the limit of {max_batch}")


def check_finite(x: np.ndarray) -> None:
    """NaN or infinity is refused here: JSON encoders would send it upstream as null or fail."""
    if not np.isfinite(x).all():
        bad = int(np.argwhere(~np.isfinite(x).reshape(len(x), -1).all(axis=1))[0][0])
        raise InvalidInstances(f"instance {bad} contains NaN or infinity")


def _row(index: int, inst: Any, spec: InputSpec) -> Any:
    if isinstance(inst, dict):
        if spec.features is None:
            raise InvalidInstances(
                f"instance {index} is an object but the model has no feature names"
            )
        missing = [f for f in spec.features if f not in inst]
        extra = sorted(set(inst) - set(spec.features))
        if missing or extra:
            raise InvalidInstances(
                f"instance {index}: missing features {missing}, unknown features {extra}"
            )
        return [inst[f] for f in spec.features]
    if isinstance(inst, list):
        return inst
    raise InvalidInstances(
        f"instance {index} must be a list or an object, not {type(inst).__name__}"
    )
