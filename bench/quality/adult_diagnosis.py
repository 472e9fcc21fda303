"""Offline check of the Eraser's class offset (``TrainingJobSpec.class_offset``) on calibration
rows only: the job's own steps (row plan, Eraser fit on the tuning rows, α curve and rule on
them out of fold) for each mode, then the fold ensemble at the chosen α and offset on the
calibration verdict rows. The test split is never read.

    python -m bench.quality.adult_diagnosis [--datasets adult,compas] [--seeds 0,1,2] [--folds 5]

Each (seed, outer fold) is one calibration set of ``datasets.outer_task``. Prints, per mode,
the mean ± sd over sets of EO bias, worst-group, average-group accuracy and accuracy on the
verdict rows, the paired difference to ``none`` (mean ± standard error), and, for the
diagnosis, the fit of the patch's logit on the model's (log G ≈ a + c·z + e·[bias]).
"""

from __future__ import annotations

import argparse
from types import SimpleNamespace

import numpy as np
import torch

from bench.quality import datasets, deployed
from patch_training.alpha import alpha_curve, choose_alpha
from patch_training.folds import plan_rows
from patch_training.methods.base import MethodInput
from patch_training.methods.eraser import Eraser
from patch_training.metrics import group_report
from patch_training.nets import predict_log
from service.jobs.spec import GateConfig, TrainingJobSpec

MODES = ("none", "raw_shares", "auto")
METRICS = ("eo_bias", "worst_group_acc", "avg_group_acc", "accuracy")


def one_set(dataset: str, seed: int, fold: int) -> dict[str, object]:
    task = datasets.outer_task(dataset, seed, fold)
    net = deployed.train(task, "vanilla", seed)
    c = task.calib
    with torch.no_grad():
        log_m = torch.log_softmax(net(torch.as_tensor(c.X)), 1).double().numpy()
    spec = TrainingJobSpec(model=dataset, target="y", bias=["b"], seed=seed)
    plan = plan_rows(c.y, c.b, spec.verdict_fraction, spec.folds, spec.holdout_fraction, seed)
    t, v = plan.tuning, plan.verdict
    model = SimpleNamespace(input=SimpleNamespace(shape=task.input_shape), num_classes=2)
    data = MethodInput(c.X[t], log_m[t], c.y[t], c.b[t], plan.folds, model, spec)  # type: ignore[arg-type]
    fitted = Eraser().fit(data)
    j = fitted.judged
    m_t, g_t, y_t, b_t = log_m[t][j], fitted.out_of_fold[j], c.y[t][j], c.b[t][j]
    m_v, g_v = log_m[v], predict_log(fitted.served, c.X[v]).astype(np.float64)
    gate = GateConfig(bootstrap_draws=100)  # bands are for the report; the rule ignores them
    out: dict[str, object] = {"raw": group_report(c.y[v], m_v.argmax(1), c.b[v])}
    for mode in MODES:
        choice = choose_alpha(alpha_curve(m_t, g_t, y_t, b_t, spec.alpha_grid, gate, 0, mode), gate)
        delta = np.zeros(2) if choice.offset is None else np.asarray(choice.offset)
        pred = np.argmax(m_v - choice.alpha * g_v + delta, 1)
        out[mode] = group_report(c.y[v], pred, c.b[v])
        out[mode + "@"] = (choice.alpha, choice.offset is not None)
    z, g = m_t[:, 1] - m_t[:, 0], g_t[:, 1] - g_t[:, 0]
    design = np.column_stack([np.ones_like(z), z, b_t == task.bias_values[-1]]).astype(float)
    out["g_fit"] = np.linalg.lstsq(design, g, rcond=None)[0]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--datasets", default="adult,compas")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--folds", type=int, default=datasets.OUTER_FOLDS)
    args = ap.parse_args()
    torch.set_num_threads(1)
    for dataset in args.datasets.split(","):
        seeds = [int(s) for s in args.seeds.split(",")]
        runs = [one_set(dataset, s, f) for s in seeds for f in range(args.folds)]
        fit = np.array([r["g_fit"] for r in runs])
        print(f"## {dataset}: {len(runs)} calibration sets, metrics on their verdict rows (%)")
        print(f"log G logit ≈ {fit[:, 0].mean():.2f} + {fit[:, 1].mean():.2f}·z "
              f"+ {fit[:, 2].mean():.2f}·[{datasets.outer_task(dataset, 0, 0).bias_values[-1]}]"
              f" (z: the model's logit; tuning rows, out of fold)")  # fmt: skip
        for name in ("raw", *MODES):
            vals = {k: np.array([100 * getattr(r[name], k) for r in runs]) for k in METRICS}
            line = "  ".join(f"{k} {x.mean():5.2f}±{x.std():4.2f}" for k, x in vals.items())
            if name not in ("raw", "none"):
                diff = {k: vals[k] - np.array([100 * getattr(r["none"], k) for r in runs])
                        for k in METRICS}  # fmt: skip
                se = {k: d.std(ddof=1) / np.sqrt(len(d)) for k, d in diff.items()}
                line += " | vs none: " + " ".join(
                    f"{k} {d.mean():+.2f}±{se[k]:.2f}" for k, d in diff.items()
                )
            if name != "raw":
                picks = [r[name + "@"] for r in runs]
                line += f" | α {np.mean([a for a, _ in picks]):.2f}"
                line += f", offset in {sum(o for _, o in picks)}/{len(picks)}"
            print(f"{name:10s} {line}", flush=True)


if __name__ == "__main__":
    main()
