"""Request instances become exactly the tensor the model expects, or a 422 that says why."""

from __future__ import annotations

import numpy as np
import pytest

from service.errors import InvalidInstances
from service.instances import instances_to_tensor
from service.settings import InputSpec

SPEC = InputSpec(shape=[3], features=["a", "b", "c"])


def test_lists_and_objects_give_the_same_tensor() -> None:
    as_lists = instances_to_tensor([[1, 2, 3], [4, 5, 6]], SPEC, 10)
    as_objects = instances_to_tensor([{"c": 3, "a": 1, "b": 2}, {"a": 4, "b": 5, "c": 6}], SPEC, 10)
    np.testing.assert_array_equal(as_lists, as_objects)
    assert as_lists.dtype == np.float32 and as_lists.shape == (2, 3)


@pytest.mark.parametrize(
    ("instances", "reason"),
    [
        ([], "non-empty"),
        ([[1, 2]], "shape [2]"),
        ([{"a": 1, "b": 2}], "missing features ['c']"),
        ([{"a": 1, "b": 2, "c": 3, "d": 4}], "unknown features ['d']"),
        ([[1, "x", 3]], "not numeric"),
        ([[1, float("nan"), 3]], "instance 0 contains NaN"),
        (["abc"], "must be a list or an object"),
        ([[1, 2, 3]] * 11, "exceed the limit of 10"),
    ],
)
def test_bad_instances_are_refused_with_a_reason(instances: list, reason: str) -> None:
    with pytest.raises(InvalidInstances, match=None) as info:
        instances_to_tensor(instances, SPEC, 10)
    assert reason in info.value.message


def test_values_beyond_float32_are_refused_as_infinite() -> None:
    with pytest.raises(InvalidInstances, match="instance 1 contains NaN or infinity"):
        instances_to_tensor([[1, 2, 3], [1e39, 2, 3]], SPEC, 10)
