"""The Poisoner's biased model f_B: guided label poisoning (Zhang et al., ACM MM 2024, Alg. 1).

f_B is trained on calibration rows (x, y) only — no bias label — so that it learns the data's
shortcut and *fails* on the rows that contradict it. Every step:

1. **Sample** a class-balanced mini-batch (balanced by the clean target y).
2. **Identify** (Eq. 4–5): L2-normalised penultimate features z; for each batch row i,
   ``d_con(i) = −(1/|J(i)|) Σ_{j∈J(i)} log( exp(z_i·z_j / τ) / Σ_{a≠i} exp(z_i·z_a / τ) )``,
   J(i) = the other batch rows whose *current* label equals row i's. The rows with the largest
   d_con (p % of the batch) are flagged bias-conflicting: far from their own class, close to
   others.
3. **Poison** (Eq. 6): a flagged row's label becomes f_B's own current prediction (the
   error-minimising label); the new label is written back to the row's entry in the training
   set and persists until the row is flagged again.
4. **Update** (Eq. 7): cross-entropy on the batch's current (poisoned) labels, Adam.

Where the paper is silent, this module decides (and ``docs/poisoner.md`` lists it):

- Batches are balanced by the clean label y: each batch takes ⌊m/K⌋ rows of every class
  present (the remainder to classes drawn at random), each class drawn from its own reshuffled
  queue, without replacement within a pass over that class, so a small class repeats sooner.
- d_con uses τ = 1 (the paper's Eq. 4 has no temperature), features taken in the same
  training-mode forward pass as the update (detached). A row whose current label has no other
  row in the batch (J(i) empty) is never flagged.
- "Top p %": the ``max(1, round(p·|B|/100))`` rows with the largest d_con (ties by position).
- Labels of rows absent from later batches keep their last value; a poisoned row flagged
  again takes f_B's prediction at that time, which may be its clean label again.
- The prediction that poisons a row is the argmax of the logits of the same forward pass
  (f_B before this step's update).
- Poisoning starts at step 1, as in Alg. 1 (``warmup_steps`` = 0). A warm-up of plain
  cross-entropy steps is an option: on a synthetic set it stopped early random poisoning from
  locking in on some seeds, on COMPAS it lowered f_B's agreement with race (docs/poisoner.md).
- Fixed number of steps, no early stopping: the final weights are returned (f_B is meant to
  *not* fit the conflicting rows, so a held-out loss is no stopping criterion for it).

Two ablations share the loop: ``loss="gce"`` (generalized cross-entropy, q = 0.7, on the clean
labels, no poisoning: LfF's biased model) and ``loss="ce"`` (plain cross-entropy on the clean
labels, the ERM reference).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from torch import nn

from patch_training.nets.tabular import TabularMLP
from patch_training.nets.vision import ResNet18, SmallCNN

if TYPE_CHECKING:
    from service.jobs.spec import Arch, TrainingJobSpec

BiasedLoss = Literal["poison", "gce", "ce"]
StepHook = Callable[[int, int], None]


@dataclass(frozen=True)
class BiasedModelConfig:
    """How f_B is trained. ``arch``, ``hidden`` and ``device`` follow the job spec
    (``with_spec``); the rest are the Poisoner's own knobs, defaulting to the paper's
    (p = 10, Adam lr 1e-3) and, for steps and batch, to what worked on ~700 COMPAS rows."""

    steps: int = 1500
    batch_size: int = 64
    p: float = 10.0  # percent of each batch flagged bias-conflicting (paper: 5-20)
    lr: float = 1e-3
    loss: BiasedLoss = "poison"
    q: float = 0.7  # GCE exponent (loss="gce" only)
    contrast_temperature: float = 1.0  # τ in Eq. 4; the paper writes none (τ = 1)
    warmup_steps: int = 0  # plain CE steps before poisoning starts (Alg. 1: none)
    arch: Arch = "auto"
    hidden: tuple[int, ...] = (64, 64)
    device: str = "cpu"
    log_every: int | None = None  # steps per history point; None = one pass over the rows

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 2 or self.lr <= 0:
            raise ValueError(f"need steps >= 1, batch_size >= 2, lr > 0: {self}")
        if not 0.0 < self.p < 100.0:
            raise ValueError(f"p is a percentage in (0, 100), got {self.p}")
        if not 0.0 < self.q <= 1.0 or self.contrast_temperature <= 0:
            raise ValueError(f"need 0 < q <= 1 and a positive contrast temperature: {self}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.loss not in ("poison", "gce", "ce"):
            raise ValueError(f"unknown loss {self.loss!r}: expected 'poison', 'gce' or 'ce'")

    def with_spec(self, spec: TrainingJobSpec) -> BiasedModelConfig:
        """The job's architecture, MLP widths and device."""
        return replace(self, arch=spec.arch, hidden=tuple(spec.hidden), device=spec.device)

    @classmethod
    def from_job(cls, spec: TrainingJobSpec) -> BiasedModelConfig:
        """The job spec's ``poisoner`` knobs (``PoisonerConfig``: every field but the serving
        ``candidates`` is one of this config's, by name), its arch, widths and device."""
        knobs = spec.poisoner.model_dump(exclude={"candidates"})
        return cls(**knobs).with_spec(spec)

    def passes(self, rows: int) -> int:
        """History points (and progress calls) of one training on ``rows`` rows."""
        every = self.log_every or max(1, math.ceil(rows / self.batch_size))
        return math.ceil(self.steps / every)


@dataclass
class BiasedHistory:
    """One entry per history point (``log_every`` steps, by default one pass over the rows)."""

    step: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)  # mean training loss since the last point
    poisoned_share: list[float] = field(default_factory=list)  # rows whose label ≠ clean y
    flagged_share: list[float] = field(default_factory=list)  # rows flagged at least once
    clean_error: list[float] = field(default_factory=list)  # batch error vs clean y, since last
    val_nll: list[float] = field(default_factory=list)  # held-out NLL (only when val is given)
    seconds: float = 0.0
    final_labels: np.ndarray | None = None  # the (poisoned) training labels at the end

    def as_dict(self) -> dict[str, object]:
        """JSON-ready (for a report): the curves, without the per-row labels."""
        out: dict[str, object] = {
            "step": self.step,
            "loss": self.loss,
            "poisoned_share": self.poisoned_share,
            "flagged_share": self.flagged_share,
            "clean_error": self.clean_error,
            "seconds": round(self.seconds, 3),
        }
        if self.val_nll:
            out["val_nll"] = self.val_nll
        return out


# --- the net's parts ------------------------------------------------------------------------


def split_net(net: nn.Module) -> tuple[Callable[[torch.Tensor], torch.Tensor], nn.Module]:
    """(penultimate features f_B^{-2}, final linear layer) of a patch net from
    ``build_patch_net``: logits = head(features(x)) and ``net(x) = log_softmax(logits)``."""
    if isinstance(net, TabularMLP):
        trunk = net.body[:-1]
        return (lambda x: trunk(net.preprocess(x))), net.body[-1]
    if isinstance(net, SmallCNN):
        return net.features, net.head
    if isinstance(net, ResNet18):
        return (lambda x: net.pool(net.blocks(net.stem(x)))), net.head
    raise TypeError(f"no penultimate layer known for {type(net).__name__}")


def penultimate_features(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """f_B^{-2}(x): the input of the net's final linear layer (in the net's current mode)."""
    return split_net(net)[0](x)


class Tempered(nn.Module):
    """``log_softmax(f(x) / T)`` for a net f that returns log-softmax (equal to dividing its
    logits by T: a row-constant shift does not survive the normalisation). T is a constant
    buffer, so the served graph is the patch contract: x → log-softmax [N, K]."""

    def __init__(self, net: nn.Module, temperature: float) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.net = net
        self.register_buffer("temperature", torch.tensor(float(temperature)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.net(x) / self.temperature, dim=-1)


# --- Eq. 4-5 --------------------------------------------------------------------------------


def contrastive_scores(z: torch.Tensor, labels: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """d_con (Eq. 4) of every row of a batch, from L2-normalised features ``z`` [m, d] and the
    rows' current labels [m]; +inf is never returned, −inf marks a row with no other row of its
    label in the batch (it cannot be scored, so it is never flagged)."""
    m = z.shape[0]
    sim = (z @ z.T) / tau
    eye = torch.eye(m, dtype=torch.bool, device=z.device)
    log_den = torch.logsumexp(sim.masked_fill(eye, -math.inf), dim=1, keepdim=True)  # A(i)
    log_prob = sim - log_den
    same = (labels[:, None] == labels[None, :]) & ~eye  # J(i)
    n_same = same.sum(dim=1)
    total = (log_prob * same).sum(dim=1)
    d = -total / n_same.clamp(min=1)
    return torch.where(n_same > 0, d, torch.full_like(d, -math.inf))


def flag_conflicting(d_con: torch.Tensor, p: float) -> torch.Tensor:
    """Eq. 5: the ``max(1, round(p·m/100))`` rows with the largest d_con (never a row whose
    d_con is −inf)."""
    k = max(1, round(p * d_con.shape[0] / 100.0))
    top = torch.topk(d_con, k).indices
    flags = torch.zeros_like(d_con, dtype=torch.bool)
    flags[top] = True
    return flags & torch.isfinite(d_con)


def gce_loss(logits: torch.Tensor, y: torch.Tensor, q: float = 0.7) -> torch.Tensor:
    """Generalized cross-entropy (Zhang & Sabuncu 2018), mean of (1 − p_y^q) / q."""
    p_y = torch.softmax(logits, dim=1).gather(1, y[:, None]).squeeze(1)
    return ((1.0 - p_y.clamp(min=1e-12) ** q) / q).mean()


class ClassBalancedSampler:
    """Batches of row indices with (near) equal counts of every clean class.

    Every class has its own shuffled queue, reshuffled when exhausted; a batch takes ⌊m/K⌋ rows
    of each class and one more from ``m mod K`` classes drawn at random."""

    def __init__(self, y: np.ndarray, batch_size: int, rng: np.random.Generator) -> None:
        self.rng = rng
        self.batch_size = batch_size
        self.pools = [np.flatnonzero(y == c) for c in np.unique(y)]
        self.queues = [rng.permutation(pool) for pool in self.pools]
        self.pos = [0] * len(self.pools)

    def _take(self, c: int, n: int) -> np.ndarray:
        out = []
        while n > 0:
            if self.pos[c] == len(self.queues[c]):
                self.queues[c], self.pos[c] = self.rng.permutation(self.pools[c]), 0
            take = min(n, len(self.queues[c]) - self.pos[c])
            out.append(self.queues[c][self.pos[c] : self.pos[c] + take])
            self.pos[c] += take
            n -= take
        return np.concatenate(out) if out else np.zeros(0, np.int64)

    def next(self) -> np.ndarray:
        k = len(self.pools)
        base, extra = divmod(self.batch_size, k)
        counts = np.full(k, base)
        counts[self.rng.permutation(k)[:extra]] += 1
        return np.concatenate([self._take(c, int(n)) for c, n in enumerate(counts)])


# --- Alg. 1 ---------------------------------------------------------------------------------


def _step_loss(
    net: nn.Module,
    x: torch.Tensor,
    idx: torch.Tensor,
    labels: torch.Tensor,
    clean: torch.Tensor,
    cfg: BiasedModelConfig,
    poison: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """One step's loss, predictions and flagged rows; poisons ``labels`` in place (Eq. 6)."""
    features, head = split_net(net)
    feats = features(x[idx])
    logits = head(feats)
    pred = logits.detach().argmax(dim=1)
    if cfg.loss == "gce":
        return gce_loss(logits, clean[idx], cfg.q), pred, None
    if not poison:  # loss "ce", or "poison" during its warm-up
        return nn.functional.cross_entropy(logits, labels[idx]), pred, None
    with torch.no_grad():
        z = nn.functional.normalize(feats.detach(), dim=1)
        current = labels[idx]  # label^{t-1}
        flags = flag_conflicting(contrastive_scores(z, current, cfg.contrast_temperature), cfg.p)
        labels[idx[flags]] = pred[flags]  # persists in the training set
        target = torch.where(flags, pred, current)
    return nn.functional.cross_entropy(logits, target), pred, idx[flags]


def _nll(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    net.eval()
    with torch.no_grad():
        value = nn.functional.nll_loss(net(x), y).item()
    net.train()
    return float(value)


def train_biased_model(
    x: np.ndarray,
    y: np.ndarray,
    config: BiasedModelConfig,
    seed: int,
    on_step: StepHook | None = None,
    *,
    num_classes: int | None = None,
    val: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[nn.Module, BiasedHistory]:
    """Train f_B on rows (x, y) as Alg. 1 (or an ablation, ``config.loss``).

    Returns the net (a ``build_patch_net`` net: log-softmax [N, K] out, exportable as a patch;
    in eval mode, on the CPU) and its history. ``on_step(step, steps)`` is called at every
    history point. ``num_classes`` defaults to ``max(y) + 1``. ``val`` (x, y), if given, is
    only evaluated (held-out NLL per history point), never used to stop or select. Weight
    initialisation and batches are seeded by ``seed``.
    """
    from patch_training.nets import build_patch_net, resolve_device, seed_everything

    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y, dtype=np.int64)
    if len(x) != len(y) or len(y) < 2:
        raise ValueError(f"need aligned x and y with >= 2 rows, got {x.shape}, {y.shape}")
    num_classes = max(2, int(y.max()) + 1) if num_classes is None else num_classes
    if y.min() < 0 or y.max() >= num_classes:
        raise ValueError(f"labels must be class indices in [0, {num_classes})")
    seed_everything(seed)
    net = build_patch_net(x.shape[1:], num_classes, x, config.arch, config.hidden)
    device = resolve_device(config.device)
    net.to(device).train()
    xt, clean = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
    labels = clean.clone()
    val_t = None
    if val is not None:
        val_t = (
            torch.as_tensor(np.asarray(val[0], np.float32), device=device),
            torch.as_tensor(np.asarray(val[1], np.int64), device=device),
        )
    opt = torch.optim.Adam(net.parameters(), lr=config.lr)
    sampler = ClassBalancedSampler(y, config.batch_size, np.random.default_rng(seed))
    every = config.log_every or max(1, math.ceil(len(y) / config.batch_size))
    history = BiasedHistory()
    flagged = torch.zeros(len(y), dtype=torch.bool, device=device)
    loss_sum, err_sum, seen = torch.zeros((), device=device), torch.zeros((), device=device), 0
    start = time.perf_counter()
    for step in range(1, config.steps + 1):
        idx = torch.from_numpy(sampler.next()).to(device)
        poison = config.loss == "poison" and step > config.warmup_steps
        loss, pred, hit = _step_loss(net, xt, idx, labels, clean, config, poison)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if hit is not None:
            flagged[hit] = True
        loss_sum += loss.detach() * len(idx)
        err_sum += (pred != clean[idx]).sum()
        seen += len(idx)
        if step % every == 0 or step == config.steps:
            history.step.append(step)
            history.loss.append(float(loss_sum) / seen)
            history.clean_error.append(float(err_sum) / seen)
            history.poisoned_share.append(float((labels != clean).float().mean()))
            history.flagged_share.append(float(flagged.float().mean()))
            if val_t is not None:
                history.val_nll.append(_nll(net, *val_t))
            loss_sum.zero_()
            err_sum.zero_()
            seen = 0
            if on_step is not None:
                on_step(step, config.steps)
    history.seconds = time.perf_counter() - start
    history.final_labels = labels.cpu().numpy()
    return net.to("cpu").eval(), history


# --- temperature scaling --------------------------------------------------------------------

_BETA_BOUNDS = (1e-3, 1e2)  # 1/T: from near-uniform to 100× sharper


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """T > 0 minimising the mean NLL of ``softmax(logits / T)`` on rows (logits, y).

    ``logits`` may be any row-shifted version (log-probabilities work). The NLL is convex in
    β = 1/T, so a bounded scalar search over β ∈ [1e-3, 100] finds the optimum; β hits its
    lower bound (T = 1000, a near-uniform patch) when f_B's ranking is worthless on these rows.
    """
    from scipy.optimize import minimize_scalar

    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    if z.ndim != 2 or len(z) != len(y) or len(y) == 0:
        raise ValueError(f"need logits [N, K] and y [N], got {z.shape}, {y.shape}")
    z = z - z.max(axis=1, keepdims=True)
    picked = z[np.arange(len(y)), y]

    def nll(beta: float) -> float:
        s = beta * z
        m = s.max(axis=1)
        return float(np.mean(m + np.log(np.exp(s - m[:, None]).sum(axis=1)) - beta * picked))

    result = minimize_scalar(nll, bounds=_BETA_BOUNDS, method="bounded", options={"xatol": 1e-5})
    return float(1.0 / result.x)


def tempered_log_probs(log_p: np.ndarray, temperature: float) -> np.ndarray:
    """``log_softmax(log_p / T)`` in float64 (what ``Tempered`` computes, on the host)."""
    s = np.asarray(log_p, dtype=np.float64) / temperature
    s = s - s.max(axis=1, keepdims=True)
    return s - np.log(np.exp(s).sum(axis=1, keepdims=True))


def describe_config(config: BiasedModelConfig) -> dict[str, object]:
    """JSON-ready summary of the f_B training knobs (for the manifest)."""
    out: dict[str, object] = {
        "loss": config.loss,
        "steps": config.steps,
        "batch_size": config.batch_size,
        "lr": config.lr,
        "optimizer": "adam",
        "sampling": "class-balanced (clean labels)",
    }
    if config.loss == "poison":
        out |= {
            "p_percent": config.p,
            "contrast_temperature": config.contrast_temperature,
            "warmup_steps": config.warmup_steps,
        }
    if config.loss == "gce":
        out["q"] = config.q
    return out


__all__: Sequence[str] = [
    "BiasedHistory",
    "BiasedModelConfig",
    "ClassBalancedSampler",
    "Tempered",
    "contrastive_scores",
    "describe_config",
    "fit_temperature",
    "flag_conflicting",
    "gce_loss",
    "penultimate_features",
    "split_net",
    "tempered_log_probs",
    "train_biased_model",
]
