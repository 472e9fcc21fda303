"""Monitoring fixtures: the gateway fixtures of ``tests/service/api`` with bias monitoring on.

The stand-in COMPAS black box serves on a real loopback port; the gateway declares ``race`` (with
a privileged group) and ``sex`` as monitored attributes and a separate feedback key.
"""

from __future__ import annotations

import pytest

from service.settings import GatewaySettings
from tests.conftest import REDIS_URL, SIGNING_KEY
from tests.service.api.conftest import (  # noqa: F401 - pytest fixtures used by these tests
    ADMIN_KEY,
    PREDICT_KEY,
    app,
    client,
    metrics,
    model_config,
)

FEEDBACK_KEY = "feedback-key-for-tests"
FEEDBACK = {"Authorization": f"Bearer {FEEDBACK_KEY}"}
RACES = ["African-American", "Caucasian", "Hispanic", "Other"]
MONITORING = {
    "positive_class": "no_recid",
    "attributes": {
        "race": {"groups": RACES, "privileged": "Caucasian"},
        "sex": {"groups": ["Female", "Male"]},
    },
}


def monitored_settings(
    key_prefix: str, upstream_url: str, *, models: list[dict] | None = None, **feedback: object
) -> GatewaySettings:
    """Gateway settings for the stand-in (or ``models``) with monitoring and feedback on."""
    model = model_config(upstream_url) | {"monitoring": MONITORING}
    return GatewaySettings(
        models=[model, *(models or [])],
        redis={"url": REDIS_URL, "key_prefix": key_prefix},
        runtime={"use_gpu": False, "poll_interval_s": 0.2},
        feedback=feedback,
        signing_key=SIGNING_KEY.decode(),
        predict_api_key=PREDICT_KEY,
        admin_api_key=ADMIN_KEY,
        feedback_api_key=FEEDBACK_KEY,
    )


@pytest.fixture
def settings(key_prefix: str, blackbox_url: str, redis_client: object) -> GatewaySettings:
    # redis_client is requested so the prefix is cleaned after the test.
    return monitored_settings(key_prefix, blackbox_url)
