"""The methods interface: calibration rows and black-box answers in, a fitted patch and its
out-of-fold log-outputs out.

A method only builds the net. Everything after it — α tuning on the out-of-fold log-outputs,
the validation gate, ONNX export with its parity check, the report, signed registration and
activation — is shared (``patch_training.jobs.pipeline``), so every method is judged and
served the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from patch_training.folds import Fold
from service.jobs.spec import TrainingJobSpec
from service.settings import ModelConfig

if TYPE_CHECKING:
    from torch import nn

    from patch_training.nets.fit import FitResult

EpochHook = Callable[[int, int], None]


@dataclass(frozen=True)
class Counterfactuals:
    """Every row with its attribute set otherwise (FMD), and the black box's answers there."""

    x: np.ndarray  # float32 [N, M, *input_shape]: M counterfactuals of each row
    log_m: np.ndarray  # float64 [N, M, K]

    def rows(self, idx: np.ndarray) -> Counterfactuals:
        return Counterfactuals(self.x[idx], self.log_m[idx])


@dataclass(frozen=True)
class MethodInput:
    """One bias column's calibration rows, the black box's answers on them, and the folds.

    ``b`` is None for a label-free method (``TrainingJobSpec.label_free``): its training never
    reads a bias column, even when the job has one for evaluation."""

    x: np.ndarray  # float32 [N, *input_shape]: exactly what the black box was sent
    log_m: np.ndarray  # float64 [N, K]: the black box's log-probabilities
    y: np.ndarray  # int64 [N]: target class indices
    b: np.ndarray | None  # str [N]: bias group of each row; None: label-free
    folds: Sequence[Fold]
    model: ModelConfig
    spec: TrainingJobSpec
    counterfactual: Counterfactuals | None = None  # methods that need them (FMD)

    @property
    def epochs_budget(self) -> int:
        """Most epochs the method may run in all (for the progress bar)."""
        return self.spec.epochs * len(self.folds)


@dataclass(frozen=True)
class FittedPatch:
    """What a method hands to the shared steps."""

    served: nn.Module  # the net that is exported and served: log-softmax [N, K]
    out_of_fold: np.ndarray  # float32 [N, K]: log G(x) of judged rows, by nets that never saw them
    judged: np.ndarray  # row indices judged out of fold (α and the gate are decided on them)
    fits: list[FitResult]  # one per fold
    description: dict[str, Any]  # what the manifest records about the net


class Method(Protocol):
    """A patch-training method; ``kind`` is the manifest kind of what it builds."""

    kind: str

    def fit(self, data: MethodInput, on_epoch: EpochHook | None = None) -> FittedPatch: ...
