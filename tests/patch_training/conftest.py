"""Helpers shared by the tests of the ``eraser`` command line."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.conftest import REDIS_URL, SIGNING_KEY


def cli_environment(
    monkeypatch: pytest.MonkeyPatch,
    folder: Path,
    models: list[dict],
    key_prefix: str,
    **extra: str,
) -> None:
    """Settings for ``eraser`` from the environment, as in production: ``models`` in a config
    file under ``folder``, the test's Redis prefix and the signing key; ``extra``: more
    ``ERASER_*`` variables."""
    config = folder / "eraser.yaml"
    config.write_text(yaml.safe_dump({"models": models}))
    for name, value in {
        "ERASER_CONFIG_FILE": str(config),
        "ERASER_REDIS__URL": REDIS_URL,
        "ERASER_REDIS__KEY_PREFIX": key_prefix,
        "ERASER_SIGNING_KEY": SIGNING_KEY.decode(),
        **extra,
    }.items():
        monkeypatch.setenv(name, value)
