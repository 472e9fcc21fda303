"""Settings: YAML for the model table, environment on top, unsafe values refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from service.settings import GatewaySettings, OutputKind, WireProtocol

YAML = """
models:
  - name: credit
    classes: [deny, approve]
    input: {shape: [3], features: [a, b, c]}
    upstream: {url: "http://127.0.0.1:9/v2/models/credit/infer", output_kind: probabilities}
runtime: {poll_interval_s: 0.5}
"""


def test_yaml_and_environment_are_merged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "eraser.yaml"
    path.write_text(YAML)
    monkeypatch.setenv("ERASER_CONFIG_FILE", str(path))
    monkeypatch.setenv("ERASER_REDIS__KEY_PREFIX", "from-env")
    monkeypatch.setenv("ERASER_PREDICT_API_KEY", "p-key")
    settings = GatewaySettings()
    model = settings.model("credit")
    assert model is not None and model.upstream.output_kind is OutputKind.PROBABILITIES
    assert model.upstream.protocol is WireProtocol.OIP_V2
    assert settings.redis.key_prefix == "from-env"
    assert settings.runtime.poll_interval_s == 0.5
    assert settings.predict_api_key.get_secret_value() == "p-key"


def test_production_refuses_placeholder_secrets() -> None:
    with pytest.raises(ValidationError, match="signing_key must be set in production"):
        GatewaySettings(environment="production", predict_api_key="a", admin_api_key="b")


def test_shared_prediction_and_admin_keys_are_refused() -> None:
    with pytest.raises(ValidationError, match="must differ"):
        GatewaySettings(predict_api_key="same", admin_api_key="same")


@pytest.mark.parametrize(
    ("model", "reason"),
    [
        ({"upstream": {"url": "u", "protocol": "generic"}}, "request_template and response_path"),
        (
            {"upstream": {"url": "u", "output_kind": "sigmoid_logits"}, "classes": ["a", "b", "c"]},
            "exactly two class names",
        ),
        ({"input": {"shape": [2], "features": ["a", "b", "c"]}}, "3 feature names"),
        (
            {"upstream": {"url": "u", "breaker_reset_s": 10, "breaker_max_reset_s": 5}},
            "breaker_max_reset_s .* is below breaker_reset_s",
        ),
    ],
)
def test_inconsistent_model_entries_are_refused(model: dict, reason: str) -> None:
    entry = {
        "name": "m",
        "classes": ["a", "b"],
        "input": {"shape": [3]},
        "upstream": {"url": "u"},
    } | model
    with pytest.raises(ValidationError, match=reason):
        GatewaySettings(models=[entry])
