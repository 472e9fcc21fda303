"""The stand-in deployed model: a small MLP on COMPAS (race is not an input, the bias is learned
from proxies such as priors and age, which is exactly the situation the Eraser targets).

Training uses scikit-learn once; serving only needs numpy (``logits``), so the black-box
process stays lean and its forward pass is a handful of matrix products.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from blackbox.data import FEATURE_NAMES, compas_split, load_compas, with_race_feature

CLASSES: tuple[str, str] = ("no_recid", "recid")


@dataclass(frozen=True)
class MlpWeights:
    """Everything needed to serve the model: layer matrices (sklearn ``coefs_`` layout, [in, out]),
    biases, the train-set standardisation, and the names that define the input/output contract."""

    weights: list[np.ndarray]
    biases: list[np.ndarray]
    mean: np.ndarray
    std: np.ndarray
    feature_names: list[str] = field(default_factory=lambda: list(FEATURE_NAMES))
    classes: list[str] = field(default_factory=lambda: list(CLASSES))
    platform: ClassVar[str] = "numpy-mlp"  # the OIP metadata's "platform"

    @property
    def n_features(self) -> int:
        return int(self.weights[0].shape[0])

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One row's shape, ``(n_features,)``: the server validates every model's input as
        ``[N, *input_shape]``, tabular and image models alike."""
        return (self.n_features,)

    def logits(self, x: np.ndarray) -> np.ndarray:
        """2-class logits ``[0, η]`` [N, 2] float32, η the sklearn logistic pre-activation, so
        ``softmax(logits)[:, 1]`` equals ``predict_proba(x)[:, 1]``."""
        h = (np.asarray(x, dtype=np.float32) - self.mean) / self.std
        for w, b in zip(self.weights[:-1], self.biases[:-1], strict=True):
            h = np.maximum(h @ w + b, 0.0)
        eta = (h @ self.weights[-1] + self.biases[-1])[:, 0]
        out = np.zeros((eta.shape[0], 2), dtype=np.float32)
        out[:, 1] = eta
        return out

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """Softmax of ``logits``, [N, 2] float32 (numerically stable form)."""
        z = self.logits(x)
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)

    def save(self, path: str | Path) -> Path:
        """Write a small ``.npz`` (no pickle) so loading needs nothing but numpy."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {
            "mean": self.mean,
            "std": self.std,
            "feature_names": np.array(self.feature_names, dtype=str),
            "classes": np.array(self.classes, dtype=str),
            "n_layers": np.array(len(self.weights)),
        }
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            arrays[f"w{i}"] = w
            arrays[f"b{i}"] = b
        with open(path, "wb") as fh:
            np.savez(fh, **arrays)  # type: ignore[arg-type]
        return path

    @classmethod
    def load(cls, path: str | Path) -> MlpWeights:
        """Inverse of ``save``; arrays come back float32 for a float32 hot path."""
        with np.load(Path(path), allow_pickle=False) as z:
            n = int(z["n_layers"])
            return cls(
                weights=[z[f"w{i}"].astype(np.float32) for i in range(n)],
                biases=[z[f"b{i}"].astype(np.float32) for i in range(n)],
                mean=z["mean"].astype(np.float32),
                std=z["std"].astype(np.float32),
                feature_names=[str(s) for s in z["feature_names"]],
                classes=[str(s) for s in z["classes"]],
            )


def save(model: MlpWeights, path: str | Path) -> Path:
    """Module-level alias of ``MlpWeights.save``."""
    return model.save(path)


def load(path: str | Path) -> MlpWeights:
    """Module-level alias of ``MlpWeights.load``."""
    return MlpWeights.load(path)


def train_compas_mlp(seed: int = 0, max_iter: int = 300, race_input: bool = False) -> MlpWeights:
    """Fit MLP (32, 16) on the train part of ``compas_split(seed)``: the seven features only
    (race-blind; its bias comes through proxies), or with ``race_input`` race as an eighth input.

    Calibration and test rows of the same split stay unseen, as they would be for a real deployed
    model. Takes about a second; sklearn is imported here only, not at serving time.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    data = with_race_feature(load_compas()) if race_input else load_compas()
    train = compas_split(data, seed=seed).train
    x, y = data.X[train], data.y[train]
    mean = x.mean(axis=0)
    std = np.where(x.std(axis=0) > 1e-6, x.std(axis=0), 1.0).astype(np.float32)
    clf = MLPClassifier(
        hidden_layer_sizes=(32, 16),
        max_iter=max_iter,
        early_stopping=True,
        random_state=seed,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit((x - mean) / std, y)
    return MlpWeights(
        weights=[np.asarray(w, dtype=np.float32) for w in clf.coefs_],
        biases=[np.asarray(b, dtype=np.float32) for b in clf.intercepts_],
        mean=mean.astype(np.float32),
        std=std,
        feature_names=list(data.feature_names),
    )
