"""The Poisoner's biased model f_B (guided label poisoning), temperature scaling, the two
label-free methods built on it, and the diagnostics of how well f_B found the bias.

The synthetic set: a weak true signal in four features and a spurious binary feature that
equals y on 90 % of rows; the other 10 % are the bias-conflicting rows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from patch_training.export.torch_onnx import check_parity, export_patch  # noqa: E402
from patch_training.folds import cross_fit_folds  # noqa: E402
from patch_training.methods.base import FittedPatch, Method, MethodInput  # noqa: E402
from patch_training.methods.poisoner import (  # noqa: E402
    Poisoner,
    PoisonerEraser,
    PoisonerPatch,
    best_agreement,
    bias_discovery,
    conflicting_rows,
)
from patch_training.nets import predict_log  # noqa: E402
from patch_training.nets.poisoned import (  # noqa: E402
    BiasedHistory,
    BiasedModelConfig,
    ClassBalancedSampler,
    Tempered,
    contrastive_scores,
    fit_temperature,
    flag_conflicting,
    gce_loss,
    penultimate_features,
    tempered_log_probs,
    train_biased_model,
)
from service.eraser_math import log_softmax  # noqa: E402
from service.jobs.spec import TrainingJobSpec  # noqa: E402
from service.settings import ModelConfig  # noqa: E402

N_TRAIN, N_TEST = 600, 600
CFG = BiasedModelConfig(steps=400, batch_size=64, p=10.0, hidden=(32, 32), arch="mlp")


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@dataclass(frozen=True)
class Synthetic:
    x: np.ndarray  # float32 [N, 5]: 4 signal features + the spurious flag
    y: np.ndarray
    b: np.ndarray  # the spurious flag, as strings

    @property
    def conflicting(self) -> np.ndarray:
        return self.b != self.y.astype(str)

    def part(self, rows: slice) -> Synthetic:
        return Synthetic(self.x[rows], self.y[rows], self.b[rows])


def synthetic(n: int, seed: int, agree: float = 0.9) -> Synthetic:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    flag = np.where(rng.random(n) < agree, y, 1 - y)
    signal = rng.normal(size=(n, 4))
    signal[:, 0] += 0.8 * (2 * y - 1)
    signal[:, 1] += 0.5 * (2 * y - 1)
    x = np.column_stack([signal, flag]).astype(np.float32)
    return Synthetic(x, y.astype(np.int64), flag.astype(str))


@pytest.fixture(scope="module")
def data() -> Synthetic:
    return synthetic(N_TRAIN + N_TEST, seed=0)


@pytest.fixture(scope="module")
def trained(data: Synthetic) -> tuple[torch.nn.Module, BiasedHistory]:
    train = data.part(slice(0, N_TRAIN))
    return train_biased_model(train.x, train.y, CFG, seed=0)


def _predict(net: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    return predict_log(net, x).argmax(axis=1)


# --- Eq. 4-5 and the sampler ----------------------------------------------------------------


def test_d_con_is_largest_for_a_row_that_sits_with_another_class() -> None:
    # Two tight clusters; row 2 is labelled 0 but lies in class 1's cluster.
    z = torch.tensor([[1.0, 0.0], [0.99, 0.14], [0.0, 1.0], [0.1, 0.99], [0.14, 0.99], [0.98, 0.2]])
    z = torch.nn.functional.normalize(z, dim=1)
    labels = torch.tensor([0, 0, 0, 1, 1, 0])
    d = contrastive_scores(z, labels)
    assert int(d.argmax()) == 2
    flags = flag_conflicting(d, p=10.0)  # round(0.6) = 1 row
    assert flags.tolist() == [False, False, True, False, False, False]


def test_d_con_matches_eq_4_and_a_lone_label_is_never_flagged() -> None:
    z = torch.nn.functional.normalize(torch.randn(5, 3, generator=torch.Generator().manual_seed(1)))
    labels = torch.tensor([0, 0, 1, 1, 2])  # row 4 has no other row of its label
    d = contrastive_scores(z, labels)
    sim = (z @ z.T).double()
    i = 0  # J(0) = {1}, A(0) = {1, 2, 3, 4}
    expected = -(sim[0, 1] - torch.logsumexp(sim[0, [1, 2, 3, 4]], dim=0))
    assert float(d[i]) == pytest.approx(float(expected), rel=1e-5)
    assert d[4] == -float("inf")
    assert not flag_conflicting(d, p=99.0)[4]


def test_batches_are_class_balanced_on_the_clean_labels() -> None:
    y = np.array([0] * 90 + [1] * 10)
    sampler = ClassBalancedSampler(y, 20, np.random.default_rng(0))
    for _ in range(5):
        idx = sampler.next()
        assert len(idx) == 20
        assert (y[idx] == 1).sum() == 10  # the small class repeats sooner
    odd = ClassBalancedSampler(np.arange(30) % 3, 10, np.random.default_rng(0)).next()
    assert sorted(np.bincount(np.arange(30)[odd] % 3)) == [3, 3, 4]


def test_gce_loss_values() -> None:
    logits = torch.tensor([[0.0, 0.0], [30.0, -30.0]])
    y = torch.tensor([0, 0])
    expected = ((1 - 0.5**0.7) / 0.7 + 0.0) / 2
    assert float(gce_loss(logits, y, q=0.7)) == pytest.approx(expected, abs=1e-6)


# --- Alg. 1 on the synthetic set ------------------------------------------------------------


# The thresholds below hold for data and training seeds 0-5 (checked when written), not only
# for the seed-0 run the tests use: guided poisoning is self-reinforcing, and on some seeds it
# also reinforces early mistakes on aligned rows (seeds 3 and 5: precision about 0.34).


def test_f_b_mistakes_concentrate_on_the_bias_conflicting_rows(
    data: Synthetic, trained: tuple[torch.nn.Module, BiasedHistory]
) -> None:
    net, _ = trained
    test = data.part(slice(N_TRAIN, None))  # rows f_B never saw
    wrong = _predict(net, test.x) != test.y
    conflict = test.conflicting
    recall = (wrong & conflict).sum() / conflict.sum()
    precision = (wrong & conflict).sum() / wrong.sum()
    assert recall > 0.5 and recall > 2 * wrong.mean()  # chance recall: the error rate
    assert precision > 0.3  # chance precision: the conflicting share, 0.1
    d = bias_discovery(test.y, _predict(net, test.x), test.b)
    assert d.agreement_pct > d.agreement_of_y_pct  # b̂ follows the flag more than y does


def test_poisoned_share_rises_to_about_p_percent_and_hits_conflicting_rows(
    data: Synthetic, trained: tuple[torch.nn.Module, BiasedHistory]
) -> None:
    _, history = trained
    train = data.part(slice(0, N_TRAIN))
    share = history.poisoned_share
    assert share[0] < share[-1]
    assert 0.04 <= share[-1] <= 0.3  # p = 10 %; the set has 10 % conflicting rows
    poisoned = history.final_labels != train.y
    assert (poisoned & train.conflicting).sum() / poisoned.sum() > 0.25  # chance: 0.1
    assert len(history.step) == len(history.loss) == len(history.clean_error)
    assert history.step[-1] == CFG.steps
    assert history.flagged_share[-1] >= share[-1]


def test_warm_up_steps_do_not_poison() -> None:
    d = synthetic(200, seed=1)
    cfg = dataclasses.replace(CFG, steps=20, warmup_steps=20, batch_size=32)
    _, history = train_biased_model(d.x, d.y, cfg, seed=0)
    assert history.poisoned_share[-1] == 0.0 and history.flagged_share[-1] == 0.0


@pytest.mark.slow
def test_poisoning_exposes_more_conflicting_rows_than_plain_or_generalized_ce() -> None:
    """Mean recall over six data/training seeds (8-16 s on two shared cores). Per seed it is
    not always so: on seed 5, poisoning found 52 % of the conflicting rows and plain CE 54 %."""
    recalls: dict[str, list[float]] = {"poison": [], "ce": [], "gce": []}
    for seed in range(6):
        d = synthetic(N_TRAIN + N_TEST, seed)
        train, test = d.part(slice(0, N_TRAIN)), d.part(slice(N_TRAIN, None))
        for loss, found in recalls.items():
            cfg = dataclasses.replace(CFG, loss=loss)  # type: ignore[arg-type]
            net, history = train_biased_model(train.x, train.y, cfg, seed=seed)
            if loss != "poison":
                assert history.poisoned_share[-1] == 0.0  # no poisoning in the ablations
            wrong = _predict(net, test.x) != test.y
            found.append((wrong & test.conflicting).sum() / test.conflicting.sum())
    mean = {loss: float(np.mean(found)) for loss, found in recalls.items()}
    assert mean["poison"] > mean["ce"] + 0.15
    assert mean["poison"] > mean["gce"] + 0.15


def test_training_is_deterministic_under_a_seed(data: Synthetic) -> None:
    train = data.part(slice(0, 300))
    cfg = BiasedModelConfig(steps=60, batch_size=32, hidden=(16,), arch="mlp")
    runs = [train_biased_model(train.x, train.y, cfg, seed=s) for s in (3, 3, 4)]
    first, second = (r[0].state_dict() for r in runs[:2])
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert runs[0][1].loss == runs[1][1].loss
    np.testing.assert_array_equal(runs[0][1].final_labels, runs[1][1].final_labels)
    assert runs[0][1].loss != runs[2][1].loss


def test_penultimate_features_feed_the_head(
    trained: tuple[torch.nn.Module, BiasedHistory], data: Synthetic
) -> None:
    net, _ = trained
    x = torch.from_numpy(data.x[:8])
    with torch.no_grad():
        feats = penultimate_features(net, x)
        assert feats.shape == (8, 32)
        torch.testing.assert_close(torch.log_softmax(net.body[-1](feats), dim=1), net(x))


# --- temperature scaling --------------------------------------------------------------------


def test_fit_temperature_recovers_a_known_temperature() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=4.0, size=(20_000, 3))
    p = np.exp(log_softmax(logits / 2.5))
    y = (rng.random((len(p), 1)) > p.cumsum(axis=1)).sum(axis=1)
    assert fit_temperature(logits, y) == pytest.approx(2.5, rel=0.05)
    assert fit_temperature(logits - 7.0, y) == pytest.approx(fit_temperature(logits, y))


def test_temperature_scaling_lowers_held_out_nll(
    data: Synthetic, trained: tuple[torch.nn.Module, BiasedHistory]
) -> None:
    net, _ = trained
    fit_rows, eval_rows = slice(N_TRAIN, N_TRAIN + 300), slice(N_TRAIN + 300, None)
    temperature = fit_temperature(predict_log(net, data.x[fit_rows]), data.y[fit_rows])
    log_p = predict_log(net, data.x[eval_rows]).astype(np.float64)
    y = data.y[eval_rows]

    def nll(lp: np.ndarray) -> float:
        return float(-lp[np.arange(len(y)), y].mean())

    assert temperature > 1.0  # f_B is overconfident about y: it is fitted to the shortcut
    assert nll(tempered_log_probs(log_p, temperature)) < nll(log_p) - 0.05
    tempered = Tempered(net, temperature)
    np.testing.assert_allclose(
        predict_log(tempered, data.x[eval_rows]),
        tempered_log_probs(log_p, temperature),
        atol=1e-5,
    )


# --- the two methods ------------------------------------------------------------------------


def _method_input(data: Synthetic, folds: int = 2) -> MethodInput:
    train = data.part(slice(0, N_TRAIN))
    logits = np.column_stack([np.zeros(N_TRAIN), 2.0 * train.x[:, 4] - 1.0 + 0.5 * train.x[:, 0]])
    model = ModelConfig.model_validate(
        {
            "name": "m",
            "upstream": {"url": "http://127.0.0.1:1/v2/models/m/infer"},
            "classes": ["no", "yes"],
            "input": {"shape": [5]},
        }
    )
    spec = TrainingJobSpec(
        model="m", target="t", bias=["b"], epochs=30, patience=5, device="cpu", hidden=[32, 32]
    )
    split = cross_fit_folds(train.y, np.zeros(N_TRAIN), folds, seed=0)  # by y only: label-free
    # b=None: a label-free job has no bias column, and training must never read one.
    return MethodInput(train.x, log_softmax(logits), train.y, None, split, model, spec)  # type: ignore[arg-type]


FAST = BiasedModelConfig(steps=200, batch_size=64)


@pytest.mark.parametrize("method", [Poisoner(FAST), PoisonerEraser(FAST)], ids=lambda m: m.kind)
def test_methods_return_out_of_fold_log_outputs_and_an_exportable_patch(
    method: Method, data: Synthetic
) -> None:
    inp = _method_input(data)
    fitted = method.fit(inp)
    assert isinstance(fitted, FittedPatch) and isinstance(fitted, PoisonerPatch)
    assert method.kind in ("poisoner", "poisoner-eraser")
    np.testing.assert_array_equal(fitted.judged, np.arange(N_TRAIN))
    assert fitted.out_of_fold.shape == (N_TRAIN, 2)
    norm = np.logaddexp.reduce(fitted.out_of_fold.astype(np.float64), axis=1)
    np.testing.assert_allclose(norm, 0.0, atol=1e-5)
    assert len(fitted.fits) == len(inp.folds) == len(fitted.histories) == 2
    assert set(np.unique(fitted.pseudo_bias)) <= {0, 1}
    assert fitted.description["biased_model"]["bias_labels_used"] is False
    # the pseudo bias label finds the spurious flag without ever seeing it
    truth = data.b[:N_TRAIN]
    assert bias_discovery(inp.y, fitted.pseudo_bias, truth).agreement_pct > 85
    # what is served is what was judged: the held-out rows of fold 0 through the fold-0 member
    blob = export_patch(fitted.served, (5,))
    assert check_parity(fitted.served, blob, inp.x[:64]) <= 1e-4


def test_one_fold_serves_the_single_tempered_net(data: Synthetic) -> None:
    inp = _method_input(data)
    single = MethodInput(inp.x, inp.log_m, inp.y, None, inp.folds[:1], inp.model, inp.spec)  # type: ignore[arg-type]
    fitted = Poisoner(FAST).fit(single)
    assert isinstance(fitted.served, Tempered)
    val = inp.folds[0].val
    np.testing.assert_allclose(
        predict_log(fitted.served, inp.x[val]), fitted.out_of_fold[val], atol=1e-5
    )
    assert (fitted.pseudo_bias[inp.folds[0].fit] == -1).all()


def test_cnn_f_b_trains_and_exports() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 48)
    x = rng.normal(size=(48, 3, 8, 8)).astype(np.float32)
    x[np.arange(48), y % 3] += 2.0  # colour channel = class: an easy shortcut
    cfg = BiasedModelConfig(steps=12, batch_size=12, arch="cnn")
    net, history = train_biased_model(x, y, cfg, seed=0)
    assert predict_log(net, x).shape == (48, 3)
    with torch.no_grad():
        assert penultimate_features(net.eval(), torch.from_numpy(x[:4])).shape == (4, 64)
    assert check_parity(net, export_patch(net, (3, 8, 8)), x[:5]) <= 1e-4
    assert history.step == [4, 8, 12]  # a history point per pass over the 48 rows


# --- diagnostics ----------------------------------------------------------------------------


def test_conflicting_rows_majority_and_assignment_rules() -> None:
    # COMPAS-like: value "A" is the majority of both classes.
    y = np.array([0] * 10 + [1] * 10)
    b = np.array(["A"] * 6 + ["C"] * 4 + ["A"] * 8 + ["C"] * 2)
    majority = conflicting_rows(y, b, rule="majority")
    assert majority.tolist() == [False] * 6 + [True] * 4 + [False] * 8 + [True] * 2
    # Best pairing: 0↔C, 1↔A (4 + 8 = 12 aligned rows, against 6 + 2 = 8).
    assignment = conflicting_rows(y, b)
    assert assignment.tolist() == [True] * 6 + [False] * 4 + [False] * 8 + [True] * 2
    # Distinct class majorities: both rules agree.
    b2 = np.array(["A"] * 7 + ["C"] * 3 + ["C"] * 9 + ["A"])
    np.testing.assert_array_equal(conflicting_rows(y, b2), conflicting_rows(y, b2, "majority"))


def test_best_agreement_maps_classes_to_attribute_values_one_to_one() -> None:
    pred = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    b = np.array(["red", "red", "blue", "blue", "blue", "green", "green", "red"])
    agreement, mapping = best_agreement(pred, b)
    assert mapping == {0: "red", 1: "blue", 2: "green"}
    assert agreement == pytest.approx(6 / 8)
    swapped, _ = best_agreement(1 - pred[:5], b[:5])  # a relabelled b̂ agrees as well
    assert swapped == pytest.approx(best_agreement(pred[:5], b[:5])[0])


def test_bias_discovery_precision_recall_and_label_free_mode() -> None:
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    b = np.array(["p", "p", "p", "q", "q", "q", "q", "p"])  # rows 3 and 7 conflict
    pred = np.array([0, 0, 1, 1, 1, 1, 0, 0])  # wrong on 2, 3, 6, 7
    d = bias_discovery(y, pred, b)
    assert d.misclassified_pct == pytest.approx(50.0)
    assert d.conflicting_pct == pytest.approx(25.0)
    assert d.precision_pct == pytest.approx(50.0)
    assert d.recall_pct == pytest.approx(100.0)
    assert d.agreement_of_y_pct == pytest.approx(75.0)
    free = bias_discovery(y, np.array([*pred[:-1], -1]))  # no b; an unjudged row is skipped
    assert free.rows == 7 and free.precision_pct is None and free.agreement_pct is None


def test_job_spec_knobs_reach_f_b_training_config() -> None:
    from service.jobs.spec import TrainingJobSpec

    spec = TrainingJobSpec.model_validate(
        {
            "model": "m",
            "target": "y",
            "method": "poisoner",
            "poisoner": {"loss": "gce", "q": 0.5, "contrast_temperature": 0.2, "steps": 7},
        }
    )
    cfg = BiasedModelConfig.from_job(spec)
    assert (cfg.loss, cfg.q, cfg.contrast_temperature, cfg.steps) == ("gce", 0.5, 0.2, 7)
