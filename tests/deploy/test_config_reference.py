"""The configuration reference (docs/configuration.md), checked against the settings models: the
committed page is what the generator renders, every field has a description, and every
environment variable the page names is one that ``GatewaySettings`` reads."""

from __future__ import annotations

import os
import re
from enum import Enum
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import pytest
import yaml
from pydantic import BaseModel, Field, SecretStr
from pydantic.fields import FieldInfo

from deploy import config_reference as reference
from service.settings import GatewaySettings, ModelConfig

PAGE_ENV = re.compile(r"`(ERASER_[A-Z0-9_]*[A-Z0-9])`")
NOT_A_SETTING = {"ERASER_CONFIG_FILE"}  # the YAML file's path, read before the settings
PAGE = reference.PATH.read_text()


@pytest.fixture
def clean_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No ambient ``ERASER_*`` variables, ``.env`` or YAML file: only what a test sets."""
    for name in list(os.environ):
        if name.upper().startswith("ERASER_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ERASER_CONFIG_FILE", str(tmp_path / "absent.yaml"))
    return tmp_path


def test_the_committed_page_is_what_the_generator_renders() -> None:
    assert reference.render() == PAGE, (
        f"{reference.PATH.relative_to(reference.ROOT)} is out of date: run `{reference.COMMAND}`"
    )


def test_check_mode_passes_on_the_committed_page(capsys: pytest.CaptureFixture[str]) -> None:
    assert reference.main(["--check"]) == 0


def test_check_mode_fails_with_a_hint_on_a_stale_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stale = tmp_path / "configuration.md"
    stale.write_text(PAGE.replace("| `redis.url` |", "| `redis.old_url` |"))
    monkeypatch.setattr(reference, "PATH", stale)
    assert reference.main(["--check"]) == 1
    out, err = capsys.readouterr()
    assert "-| `redis.old_url` |" in out and "+| `redis.url` |" in out
    assert reference.COMMAND in err
    assert stale.read_text() != reference.render()  # --check never writes


def test_every_field_of_every_settings_model_has_a_description() -> None:
    assert reference.undocumented() == [], (
        "add a description (what the setting does, with its unit) to these fields in "
        "service/settings.py or service/monitoring/config.py"
    )
    leaves = [(p, i) for p, i in reference.fields() if reference.nested(i.annotation) is None]
    assert len(leaves) > 50  # the walk reaches every section, the model table's included
    for _, info in reference.fields():
        inner = reference.nested(info.annotation)
        if inner is not None:  # a section: its class docstring says what it is
            assert reference.summary(inner[1]), f"{inner[1].__name__} needs a docstring"


def test_a_field_without_a_description_is_reported() -> None:
    class Inner(BaseModel):
        """A nested section."""

        documented: int = Field(default=1, description="a number")
        bare: int = 2

    class Outer(BaseModel):
        inner: Inner = Inner()
        items: list[Inner] = Field(default_factory=list, description="entries")
        loose: str = "x"

    assert reference.undocumented(Outer) == ["loose", "inner.bare", "items[].bare"]


def test_every_leaf_setting_has_a_row_and_the_sections_come_in_order() -> None:
    for path, _ in reference.fields():
        assert f"| `{path}` |" in PAGE, path
    headings = re.findall(r"^## (.+)$", PAGE, flags=re.MULTILINE)
    assert headings == [
        "Top level",
        "`redis`",
        "`runtime`",
        "`training`",
        "`feedback`",
        "`limits`",
        "`grpc`",
        "`models[]`",
        "`models[].upstream`",
        "`models[].input`",
        "`models[].monitoring`",
        "`models[].monitoring.attributes.<name>`",
        "Example: one model entry",
    ]


def test_secrets_show_no_value() -> None:
    for name in ("signing_key", "predict_api_key", "admin_api_key"):
        secret = getattr(GatewaySettings(), name).get_secret_value()
        assert secret not in PAGE, name
        assert f"| `{name}` | `ERASER_{name.upper()}` | secret | placeholder" in PAGE


def test_the_example_model_entries_are_valid() -> None:
    block = PAGE.split("```yaml\n", 1)[1].split("```", 1)[0]
    entries = yaml.safe_load(block)["models"]
    assert entries
    for entry in entries:
        ModelConfig.model_validate(entry)


def page_environment_variables() -> list[str]:
    return sorted(set(PAGE_ENV.findall(PAGE)) - NOT_A_SETTING)


def field_at(env: str) -> tuple[list[str], FieldInfo]:
    """The field an environment variable names, found from its name alone (not the generator)."""
    path = env.removeprefix("ERASER_").lower().split("__")
    model: type[BaseModel] = GatewaySettings
    for part in path[:-1]:
        annotation = model.model_fields[part].annotation
        assert isinstance(annotation, type) and issubclass(annotation, BaseModel), env
        model = annotation
    assert path[-1] in model.model_fields, f"{env}: no field {'.'.join(path)}"
    return path, model.model_fields[path[-1]]


def other_value(name: str, info: FieldInfo) -> tuple[str, Any]:
    """A valid, non-default value for a field: as an environment string and as read back."""
    annotation, default = info.annotation, info.get_default(call_default_factory=True)
    options = get_args(annotation)
    if SecretStr in (annotation, *options):
        return f"test-{name}", f"test-{name}"
    if get_origin(annotation) is Literal:
        other = next(o for o in options if o != default)
        return other, other
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        other = next(m for m in annotation if m != default)
        return other.value, other
    if annotation is bool:
        return str(not default).lower(), not default
    if annotation in (int, float):
        return str(default + 1), default + 1
    if annotation is str:
        return f"{default}-test", f"{default}-test"
    if default is None and annotation == int | None:  # optional, unset by default
        return "8001", 8001
    if default is None and annotation == str | None:
        return "127.0.0.2", "127.0.0.2"
    raise AssertionError(f"{name}: teach other_value() a non-default value of {annotation}")


def test_the_page_names_the_nested_environment_variables() -> None:
    names = page_environment_variables()
    for env in ("ERASER_REDIS__KEY_PREFIX", "ERASER_LIMITS__PREDICT_BODY_MB"):
        assert env in names
    assert set(names) == set(reference.environment_variables())


@pytest.mark.parametrize("env", page_environment_variables())
def test_each_environment_variable_on_the_page_sets_its_field(
    env: str, clean_environment: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, info = field_at(env)
    raw, expected = other_value(path[-1], info)
    if path == ["environment"]:  # production refuses placeholder secrets
        for secret in ("signing_key", "predict_api_key", "admin_api_key"):
            monkeypatch.setenv(f"ERASER_{secret.upper()}", f"real-{secret}")
    monkeypatch.setenv(env, raw)
    got: Any = GatewaySettings()
    for part in path:
        got = getattr(got, part)
    if isinstance(got, SecretStr):
        got = got.get_secret_value()
    assert got == expected, env


def test_environment_variables_win_over_the_yaml_file_setting_by_setting(
    clean_environment: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = clean_environment / "eraser.yaml"
    config.write_text('redis: {url: "redis://from-yaml:6379/1", key_prefix: from-yaml}\n')
    monkeypatch.setenv("ERASER_CONFIG_FILE", str(config))
    monkeypatch.setenv("ERASER_REDIS__KEY_PREFIX", "from-env")
    settings = GatewaySettings()
    assert (settings.redis.url, settings.redis.key_prefix) == (
        "redis://from-yaml:6379/1",
        "from-env",
    )
