"""Device resolution fails loudly; seeding makes weight initialisation reproducible."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from patch_training.nets import resolve_device, seed_everything  # noqa: E402


def test_explicit_cuda_without_cuda_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda")


def test_auto_falls_back_to_cpu_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")


def test_unknown_device_name_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu")


def test_same_seed_gives_same_initial_weights() -> None:
    seed_everything(3)
    a = torch.nn.Linear(4, 3).weight.detach().clone()
    seed_everything(3)
    b = torch.nn.Linear(4, 3).weight.detach().clone()
    seed_everything(4)
    c = torch.nn.Linear(4, 3).weight.detach().clone()
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
