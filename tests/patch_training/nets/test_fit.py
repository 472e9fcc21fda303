"""fit_to_targets learns known soft targets, stops early, restores its best weights, and is
reproducible under a fixed seed."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest

from service.jobs.spec import TrainingJobSpec

torch = pytest.importorskip("torch")

from patch_training.nets import (  # noqa: E402
    FitConfig,
    FitResult,
    build_patch_net,
    fit_to_targets,
    predict_log,
    seed_everything,
)

N_FIT = 400
Fitted = tuple["torch.nn.Module", FitResult, float, list[tuple[int, int]]]


def fit_config(**fields: object) -> FitConfig:
    """The job spec's defaults, with ``fields`` overridden (the spec is their one source)."""
    spec = TrainingJobSpec(model="m", target="t", bias=["b"], device="cpu", **fields)
    return FitConfig.from_spec(spec)


CFG = fit_config(epochs=200, patience=5)


@dataclass(frozen=True)
class Problem:
    x: np.ndarray
    t: np.ndarray

    def split(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return self.x[:N_FIT], self.t[:N_FIT], self.x[N_FIT:], self.t[N_FIT:]


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # shared CI cores; also makes timings stable
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def problem() -> Problem:
    """Targets are softmax(x W) for a fixed W: a patch can match them almost exactly."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 6)).astype(np.float32)
    x[:, 2] = rng.integers(0, 4, 600)  # one categorical column
    logits = x.astype(np.float64) @ rng.normal(size=(6, 3))
    t = np.exp(logits - logits.max(axis=1, keepdims=True))
    return Problem(x, t / t.sum(axis=1, keepdims=True))


def _kl(t: np.ndarray, log_g: np.ndarray) -> float:
    return float(np.mean(np.sum(t * (np.log(t) - log_g.astype(np.float64)), axis=1)))


def _fresh_net(problem: Problem, seed: int = 0) -> torch.nn.Module:
    seed_everything(seed)
    return build_patch_net((6,), 3, problem.x[:N_FIT], arch="mlp", hidden=(32,))


@pytest.fixture(scope="module")
def fitted(problem: Problem) -> Fitted:
    net = _fresh_net(problem)
    initial_kl = _kl(problem.t[N_FIT:], predict_log(net, problem.x[N_FIT:]))
    calls: list[tuple[int, int]] = []
    result = fit_to_targets(net, *problem.split(), CFG, progress=lambda e, m: calls.append((e, m)))
    return net, result, initial_kl, calls


def test_val_kl_falls_far_below_its_initial_value(fitted: Fitted) -> None:
    _, result, initial_kl, _ = fitted
    assert result.best_val_kl < 0.02 * initial_kl


def test_small_patience_stops_before_max_epochs(fitted: Fitted) -> None:
    _, result, _, _ = fitted
    assert result.epochs_run < CFG.epochs
    assert result.epochs_run == result.best_epoch + CFG.patience
    assert len(result.history) == result.epochs_run


def test_best_weights_are_restored(fitted: Fitted, problem: Problem) -> None:
    net, result, _, _ = fitted
    final_kl = _kl(problem.t[N_FIT:], predict_log(net, problem.x[N_FIT:]))
    assert final_kl == pytest.approx(result.best_val_kl, abs=1e-6)
    assert result.best_val_kl == min(val for _, val in result.history)
    assert result.history[-1][1] > result.best_val_kl  # the last epoch's weights were worse


def test_net_is_left_in_eval_mode_on_cpu(fitted: Fitted) -> None:
    net, result, _, _ = fitted
    assert not net.training
    assert {p.device.type for p in net.parameters()} == {"cpu"}
    assert result.device == "cpu"


def test_progress_is_called_once_per_epoch(fitted: Fitted) -> None:
    _, result, _, calls = fitted
    assert calls == [(e, CFG.epochs) for e in range(1, result.epochs_run + 1)]


def test_same_seed_gives_bit_identical_runs(problem: Problem) -> None:
    cfg = fit_config(epochs=3, seed=7)
    nets, results = [], []
    for _ in range(2):
        nets.append(_fresh_net(problem))
        results.append(fit_to_targets(nets[-1], *problem.split(), cfg))
    assert results[0].history == results[1].history
    for a, b in zip(nets[0].state_dict().values(), nets[1].state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_other_shuffle_seed_changes_the_run(problem: Problem) -> None:
    cfgs = [fit_config(epochs=2, seed=s) for s in (1, 2)]
    runs = [fit_to_targets(_fresh_net(problem), *problem.split(), cfg) for cfg in cfgs]
    assert runs[0].history != runs[1].history


def test_targets_that_are_not_distributions_are_rejected(problem: Problem) -> None:
    x_fit, t_fit, x_val, t_val = problem.split()
    with pytest.raises(ValueError, match="rows summing to 1"):
        fit_to_targets(_fresh_net(problem), x_fit, 2 * t_fit, x_val, t_val, CFG)
