"""step_plan: sets up to LARGE_FIT_ROWS train exactly as the config says; larger ones keep an
epoch's step count, grow the batch and the learning rate with N, and cap the rows seen, so the
cost per row does not grow with N. fit_to_targets follows the plan."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest

from service.jobs.spec import TrainingJobSpec

torch = pytest.importorskip("torch")

from patch_training.nets import build_patch_net, fit_to_targets, seed_everything  # noqa: E402
from patch_training.nets import fit as fit_module  # noqa: E402
from patch_training.nets.fit import (  # noqa: E402
    LARGE_FIT_ROWS,
    LARGE_ROW_BUDGET,
    MAX_LR_SCALE,
    MIN_LARGE_EPOCHS,
    FitConfig,
    step_plan,
)


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # shared cores: OpenMP threads would wait on each other
    yield
    torch.set_num_threads(before)


CFG = FitConfig.from_spec(TrainingJobSpec(model="m", target="t", bias=["b"], device="cpu"))
LARGE = [LARGE_FIT_ROWS + 1, 20_000, 52_500, 100_000, 1_000_000]


@pytest.mark.parametrize("n_fit", [1, 127, 128, 129, 360, 2_625, 5_250, LARGE_FIT_ROWS])
def test_sets_up_to_the_threshold_use_the_config_unchanged(n_fit: int) -> None:
    plan = step_plan(n_fit, CFG)
    assert (plan.batch_size, plan.lr, plan.epochs, plan.patience) == (
        CFG.batch_size,
        CFG.lr,
        CFG.epochs,
        CFG.patience,
    )
    assert plan.steps_per_epoch == math.ceil(n_fit / CFG.batch_size)


@pytest.mark.parametrize("n_fit", LARGE)
def test_large_sets_keep_the_step_count_and_grow_the_batch(n_fit: int) -> None:
    plan = step_plan(n_fit, CFG)
    steps_at_threshold = math.ceil(LARGE_FIT_ROWS / CFG.batch_size)
    assert plan.steps_per_epoch <= steps_at_threshold
    assert plan.batch_size * plan.steps_per_epoch >= n_fit  # an epoch still covers every row
    assert plan.batch_size > CFG.batch_size
    scale = min(MAX_LR_SCALE, math.sqrt(plan.batch_size / CFG.batch_size))
    assert plan.lr == pytest.approx(CFG.lr * scale)
    assert plan.lr <= MAX_LR_SCALE * CFG.lr
    assert MIN_LARGE_EPOCHS <= plan.epochs <= CFG.epochs
    assert 1 <= plan.patience <= min(CFG.patience, plan.epochs)


@pytest.mark.parametrize("n_fit", LARGE)
def test_large_sets_see_at_most_the_row_budget(n_fit: int) -> None:
    plan = step_plan(n_fit, CFG)
    rows_seen = plan.epochs * n_fit
    assert rows_seen <= max(LARGE_ROW_BUDGET + n_fit, MIN_LARGE_EPOCHS * n_fit)


def test_epochs_per_row_never_grow_with_n() -> None:
    """Most passes over the data (training cost per row) is non-increasing in N."""
    sizes = [100, 1_000, LARGE_FIT_ROWS, *LARGE]
    epochs = [step_plan(n, CFG).epochs for n in sizes]
    assert epochs == sorted(epochs, reverse=True)
    assert epochs[-1] == MIN_LARGE_EPOCHS  # a million rows: the floor


def test_the_plan_scales_with_the_configured_batch() -> None:
    cfg = FitConfig(epochs=50, batch_size=32, lr=1e-3, weight_decay=0, patience=5, seed=0,
                    device="cpu")  # fmt: skip
    plan = step_plan(4 * LARGE_FIT_ROWS, cfg)
    assert plan.steps_per_epoch <= LARGE_FIT_ROWS // 32
    assert plan.epochs <= cfg.epochs and plan.patience <= cfg.patience


def test_no_rows_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one fit row"):
        step_plan(0, CFG)


def test_fit_follows_the_plan_above_the_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the threshold lowered to 64 rows, a 400-row fit takes 2-step epochs of 200 rows at
    a larger learning rate, and still learns its targets."""
    monkeypatch.setattr(fit_module, "LARGE_FIT_ROWS", 64)
    monkeypatch.setattr(fit_module, "LARGE_ROW_BUDGET", 400 * 60)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 4)).astype(np.float32)
    logits = x.astype(np.float64) @ rng.normal(size=(4, 2))
    t = np.exp(logits - logits.max(axis=1, keepdims=True))
    t /= t.sum(axis=1, keepdims=True)
    cfg = FitConfig(epochs=300, batch_size=32, lr=3e-3, weight_decay=0, patience=20, seed=0,
                    device="cpu")  # fmt: skip
    seed_everything(0)
    net = build_patch_net((4,), 2, x[:400], arch="mlp", hidden=(16,))
    result = fit_to_targets(net, x[:400], t[:400], x[400:], t[400:], cfg)
    assert result.plan is not None
    assert (result.plan.batch_size, result.plan.steps_per_epoch, result.plan.epochs) == (200, 2, 60)
    assert result.plan.lr == pytest.approx(3e-3 * math.sqrt(200 / 32))
    assert result.epochs_run <= 60
    assert result.best_val_kl < 0.1 * result.history[0][1]
