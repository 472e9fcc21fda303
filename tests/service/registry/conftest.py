"""Registry fixtures: a Registry on the test's own key prefix, and a patch spec factory."""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aioredis

from service.registry.models import APPROVED, PatchSpec, VersionStatus
from service.registry.store import Registry
from tests.conftest import SIGNING_KEY

SERVABLE = VersionStatus(status=APPROVED, reason="a test's patch")  # a stack may list it


def make_spec(model: str = "credit", **overrides: Any) -> PatchSpec:
    fields: dict[str, Any] = {
        "kind": "eraser",
        "model": model,
        "classes": ["deny", "approve"],
        "input_shape": [7],
        "validation_metrics": {"worst_group_acc": 0.58},
    }
    return PatchSpec(**(fields | overrides))


@pytest.fixture
def registry(redis_client: aioredis.Redis, key_prefix: str) -> Registry:
    return Registry(redis_client, SIGNING_KEY, prefix=key_prefix)
