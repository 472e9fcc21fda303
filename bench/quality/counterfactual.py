"""Counterfactual bias of every benchmark row (issue 15, §4), and the ``cf_average`` baseline.

The measure is the audit's (``patch_training.audit.row_changes``, docs/audit.md): with ŷ the
decision on the original row, B = mean over rows of mean over x̄ of |p(ŷ | x) − p(ŷ | x̄)|,
in percent. What x̄ is depends on the setting:

- **COMPAS, Adult** (the attribute is an input column: ``african_american``, ``sex_male``):
  x̄ is the test row with the column flipped, one per row, asked through the gateway as extra
  query rows after the test split. Each query row carries the *counterfactual* group (the
  attribute-aware peers read it at prediction time, as they would for that person).
- **Colored MNIST** (no attribute input): x̄ is the same digit on each of the nine other
  background colours. The test split already holds every digit in all ten colours
  (``datasets.cmnist_task``), so the counterfactuals are rows of the split itself, found by
  index: no extra query, and every answer still comes through ``POST /predict``.

Every answer array here is over the *pool*: the test rows, then the extra query rows.

Rows that output decisions only (the peers: threshold optimisers, LinearPost; some randomised)
get the same measure on their decisions as one-hot probabilities, i.e. the share of rows whose
decision flips (``decision_cf_bias``). Their x and x̄ are predicted in two calls with the same
seed, so row i of both draws the same random numbers (common random numbers): for fairlearn's
randomised thresholds (decision = 1[u ≤ q(x)]) the expected flip rate is then exactly
mean |q(x) − q(x̄)|, the audit's B on the decision probabilities q.

``cf_average``: answer with the black box's probabilities averaged over the attribute's values
(the row under every value, itself included: k upstream calls per decision; k = 2 for COMPAS
and Adult, 10 colours for Colored MNIST). Its B is 0 by construction up to the black box's
own repeatability, and measured, not assumed: the answers for x̄ are averaged from a second,
independent pass of upstream calls.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.quality.datasets import Table, Task, colourise
from blackbox.data import RACE_FEATURE, RACES
from patch_training.audit import row_changes

# The attribute's input column and the bias group each of its values stands for.
INPUT_ATTRIBUTES: dict[str, tuple[str, dict[float, str]]] = {
    "compas": (RACE_FEATURE, {1.0: RACES[0], 0.0: RACES[1]}),
    "adult": ("sex_male", {1.0: "Male", 0.0: "Female"}),
}
PROB_FLOOR = 1e-12  # log of a probability the gateway rounded to 0


@dataclass(frozen=True)
class CounterfactualTest:
    """A test split's counterfactuals as indices into the pool (test rows, then ``queries``).

    ``index`` [N, M]: the pool rows that are each test row's counterfactuals. ``values``
    [P, k]: for every pool row, the pool rows that are the same input under each value of the
    attribute, itself included (what ``cf_average`` averages)."""

    attribute: str
    queries: Table
    index: np.ndarray
    values: np.ndarray

    @property
    def k(self) -> int:
        """Upstream calls per decision of ``cf_average``: the attribute's values."""
        return int(self.values.shape[1])

    def pool(self, test: Table) -> Table:
        """The test rows, then the query rows (what one ``POST /predict`` pass sends)."""
        if not len(self.queries):
            return test
        q = self.queries
        return Table(np.concatenate([test.X, q.X]), np.concatenate([test.y, q.y]),
                     np.concatenate([test.b, q.b]))  # fmt: skip

    def bias(
        self, pool_probs: np.ndarray, log: bool = False, cf_pool: np.ndarray | None = None
    ) -> float:
        """Counterfactual bias (%) of answers on the pool (probabilities, or log-probabilities
        with ``log``); the decision ŷ is the answer's own on each test row. ``cf_pool``: take
        the x̄ answers from another pass over the pool (``cf_average``'s second pass)."""
        n = len(self.index)
        log_p = pool_probs if log else _log(pool_probs)
        other = log_p if cf_pool is None else (cf_pool if log else _log(cf_pool))
        return counterfactual_bias(log_p[:n], other[self.index])

    def decision_bias(self, pool_pred: np.ndarray) -> float:
        """Counterfactual bias (%) of decisions on the pool (class index per pool row)."""
        n = len(self.index)
        return decision_cf_bias(pool_pred[:n], pool_pred[self.index])

    def averaged(self, pool_probs: np.ndarray) -> np.ndarray:
        """``cf_average``'s probabilities on every pool row: the mean over its value set."""
        return pool_probs[self.values].mean(axis=1)


def counterfactual_bias(log_p: np.ndarray, log_p_cf: np.ndarray) -> float:
    """The audit's B (%) from log-probabilities [N, K] and [N, M, K] (``audit.row_changes``)."""
    return 100 * float(row_changes(log_p, log_p_cf).change.mean())


def decision_cf_bias(pred: np.ndarray, pred_cf: np.ndarray) -> float:
    """B (%) of decisions as one-hot probabilities: ``pred`` [N], ``pred_cf`` [N] or [N, M].
    For deterministic decisions it is the share of (row, x̄) pairs whose decision flips."""
    pred = np.asarray(pred, dtype=np.int64)
    pred_cf = np.asarray(pred_cf, dtype=np.int64).reshape(len(pred), -1)
    k = int(max(pred.max(initial=0), pred_cf.max(initial=0))) + 1
    with np.errstate(divide="ignore"):
        log_p = np.log(np.eye(k)[pred])
        log_p_cf = np.log(np.eye(k)[pred_cf])
    return counterfactual_bias(log_p, log_p_cf)


def counterfactual_test(task: Task) -> CounterfactualTest:
    """The test split's counterfactuals for ``task`` (tabular: flipped input; Colored MNIST:
    recoloured, found in the paired test split)."""
    if task.notes.get("paired_test"):
        return _recoloured(task)
    if task.dataset in INPUT_ATTRIBUTES:
        return _flipped(task)
    raise ValueError(f"no counterfactuals defined for {task.dataset!r}")


def flipped_inputs(task: Task, table: Table) -> Table:
    """``table`` with the binary attribute column flipped, and the counterfactual group."""
    column, groups = INPUT_ATTRIBUTES[task.dataset]
    j = (task.feature_names or []).index(column)
    values = table.X[:, j]
    if not np.isin(values, list(groups)).all():
        raise ValueError(f"{task.dataset}: {column} holds values other than {sorted(groups)}")
    label = np.vectorize(groups.__getitem__, otypes=[str])
    if not np.array_equal(label(values), np.asarray(table.b).astype(str)):
        raise ValueError(f"{task.dataset}: {column} disagrees with the bias column")
    x = table.X.copy()
    x[:, j] = 1.0 - values
    return Table(x, table.y.copy(), label(x[:, j]))


def _flipped(task: Task) -> CounterfactualTest:
    n = len(task.test)
    queries = flipped_inputs(task, task.test)
    index = (n + np.arange(n))[:, None]
    own = np.arange(2 * n)
    other = np.concatenate([n + np.arange(n), np.arange(n)])
    values = np.sort(np.stack([own, other], axis=1), axis=1)  # the same order for x and x̄
    return CounterfactualTest(INPUT_ATTRIBUTES[task.dataset][0], queries, index, values)


def _recoloured(task: Task) -> CounterfactualTest:
    """The paired test split holds digit d in colour c at row c·D + d (D digits): the
    counterfactuals of a row are the rows of the same digit in the nine other colours."""
    colours = len(task.bias_values)
    n = len(task.test)
    if n % colours:
        raise ValueError(f"a paired test split of {n} rows is not {colours} colours of each digit")
    digits = n // colours
    row = np.arange(n)
    digit, colour = row % digits, row // digits
    every = digit[:, None] + digits * np.arange(colours)[None, :]  # [N, colours]
    index = every[every != row[:, None]].reshape(n, colours - 1)
    empty = Table(task.test.X[:0], task.test.y[:0], task.test.b[:0])
    _check_recoloured(task, every, colour)
    return CounterfactualTest("background colour", empty, index, every)


def _check_recoloured(task: Task, every: np.ndarray, colour: np.ndarray) -> None:
    """Each row's value set is one digit (same label) in every colour, in colour order."""
    b = np.asarray(task.test.b)
    if not (task.test.y[every] == task.test.y[:, None]).all():
        raise ValueError("paired test split: a digit's colour versions carry different labels")
    if (
        not (b[every[:, 0]] == task.bias_values[0]).all()
        or not (b == np.asarray(task.bias_values)[colour]).all()
    ):
        raise ValueError("paired test split: rows are not ordered colour by colour")


def calibration_pairs(task: Task) -> tuple[str, bytes]:
    """The FMD job's uploaded pairs for a Colored MNIST full calibration set: every digit in
    each of the nine other background colours, ``x_cf`` uint8 [N, 9, 3, 28, 28] in the
    calibration rows' order (the format ``POST /patches`` takes as its ``pairs`` part)."""
    import io

    gray, colours = task.notes["calib_gray"], np.asarray(task.notes["calib_colours"])
    n, k = len(colours), len(task.bias_values)
    if len(gray) != len(task.calib) or n != len(task.calib):
        raise ValueError("the task keeps no grey calibration digits matching its calibration set")
    if not np.array_equal(colourise(gray, colours), task.calib.X):
        raise ValueError("the grey calibration digits do not colour into the calibration set")
    others = (colours[:, None] + np.arange(1, k)[None, :]) % k  # [N, 9], the other colours
    x_cf = colourise(np.repeat(gray, k - 1, axis=0), others.reshape(-1))
    buf = io.BytesIO()
    np.savez_compressed(buf, x_cf=x_cf.astype(np.uint8).reshape(n, k - 1, *x_cf.shape[1:]))
    return "pairs.npz", buf.getvalue()


def _log(probs: np.ndarray) -> np.ndarray:
    return np.log(np.clip(np.asarray(probs, dtype=np.float64), PROB_FLOOR, 1.0))
