"""Process-wide torch settings a patch fit depends on: RNG seeds and the compute device."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed every generator that weight initialisation may draw from.

    Patches are audited artefacts: re-running a training job with the same seed must give the
    same bytes, so cuDNN's autotuner (which picks kernels by timing) is switched off as well.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def resolve_device(name: str) -> torch.device:
    """Map a config string to a device, failing loudly rather than silently falling back.

    ``"auto"`` is the only name allowed to fall back to CPU: an explicit ``"cuda"`` on a machine
    without CUDA is a configuration error that would otherwise make a job 50× slower unnoticed.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {name!r} requested but CUDA is not available to torch "
                f"{torch.__version__}; use 'cpu' or 'auto'"
            )
        return torch.device(name)
    raise ValueError(f"unknown device {name!r}: expected 'auto', 'cpu' or 'cuda[:i]'")


def limit_threads(threads: int) -> None:
    """Cap PyTorch's intra-op threads for this process (0 leaves PyTorch's default).

    On 2 shared cores, with another process keeping one busy, each job test in
    tests/patch_training/jobs/test_distill.py took 76–86 s (one hit the 120 s timeout) with two
    threads and 4.4–5.0 s with one: the OpenMP threads wait on each other.
    """
    if threads > 0:
        torch.set_num_threads(threads)
