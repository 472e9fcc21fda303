"""Fixtures for the upstream client tests: a real misbehaving server per test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.fixtures_upstream import FakeUpstream, fake_upstream


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    async with fake_upstream() as server:
        yield server
