"""``eraser train eraser`` from a terminal: settings from the environment, like production."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis
from typer.testing import CliRunner

from blackbox.data import compas_calibration_csv, compas_split, load_compas
from deploy.local.processes import standin_model_config
from patch_training.cli import app
from tests.conftest import REDIS_URL
from tests.patch_training.conftest import cli_environment

DATA = load_compas()


@pytest.fixture
def env(
    tmp_path: Path, blackbox_url: str, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> Path:
    cli_environment(monkeypatch, tmp_path, [standin_model_config(blackbox_url)], key_prefix)
    calib = tmp_path / "calib.csv"
    calib.write_bytes(compas_calibration_csv(DATA, compas_split(DATA).calib[:600]))
    return calib


def train(calib: Path, *extra: str) -> object:
    args = ["train", "eraser", "--model", "compas", "--calibration", str(calib)]
    args += ["--target", "two_year_recid", "--bias", "race", "--epochs", "30", *extra]
    return CliRunner().invoke(app, args)


# Sync tests: the CLI runs its own event loop (asyncio.run), as it does in a terminal.
def test_train_registers_a_version_and_prints_the_result(
    env: Path, redis_client: object, key_prefix: str
) -> None:
    result = train(env, "--name", "cli-race")
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    [patch] = answer["patches"]
    assert patch["name"] == "cli-race" and patch["version"] == 1
    with redis.Redis.from_url(REDIS_URL) as client:
        assert client.exists(f"{key_prefix}:manifest:cli-race:1")


def test_a_refused_cache_entry_is_reported(
    env: Path, blackbox_url: str, redis_client: object, key_prefix: str
) -> None:
    from patch_training.blackbox import OutputCache
    from service.calibration.loader import load_calibration
    from service.settings import ModelConfig

    model = ModelConfig.model_validate(standin_model_config(blackbox_url))
    x = load_calibration(env.read_bytes(), model, "two_year_recid", ["race"], 10**6, "c.csv").x
    where = f"{key_prefix}:bb_cache:{OutputCache.key_for(model, x)}"
    with redis.Redis.from_url(REDIS_URL) as client:
        client.set(where, b"forged")
    result = train(env)
    assert result.exit_code == 0, result.output
    assert "not an authenticated" in json.loads(result.stdout)["cache_entry_refused"]
    assert "warning: cached black-box answers refused" in result.stderr
    with redis.Redis.from_url(REDIS_URL) as client:
        assert client.get(where) != b"forged"  # replaced by the answers just queried


def test_a_bad_calibration_file_is_a_usage_error_and_stores_nothing(
    env: Path, redis_client: object, key_prefix: str
) -> None:
    env.write_text("age,priors_count\n1,2\n")
    result = train(env)
    assert result.exit_code == 2
    assert "missing" in result.output and "--calibration" in result.output
    with redis.Redis.from_url(REDIS_URL) as client:
        assert list(client.scan_iter(match=f"{key_prefix}:*")) == []


def test_an_unknown_model_names_the_flag(env: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["train", "eraser", "--model", "nope", "--calibration", str(env),
         "--target", "t", "--bias", "b"],
    )  # fmt: skip
    assert result.exit_code == 2 and "--model" in result.output


def test_enqueue_hands_the_job_to_the_queue(
    env: Path, redis_client: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.jobs.queue import job_view, sync_redis
    from service.settings import GatewaySettings
    from tests.workers import remove_queue, with_own_queue

    settings = with_own_queue(GatewaySettings())
    monkeypatch.setenv("ERASER_TRAINING__QUEUE", settings.training.queue)
    try:
        result = train(env, "--enqueue")
        assert result.exit_code == 0, result.output
        job_id = json.loads(result.stdout)["job_id"]
        with sync_redis(settings) as connection:
            view = job_view(connection, job_id)
        assert view.state == "queued" and view.method == "eraser"
    finally:
        remove_queue(settings)


def train_poisoner(calib: Path, *extra: str) -> object:
    args = ["train", "poisoner", "--model", "compas", "--calibration", str(calib)]
    args += ["--target", "two_year_recid", "--steps", "40", "--fb-batch", "32", *extra]
    return CliRunner().invoke(app, [*args, "--epochs", "10"])


def test_train_poisoner_takes_its_knobs_and_names_a_bad_one(env: Path) -> None:
    help_text = CliRunner().invoke(app, ["train", "poisoner", "--help"]).output
    assert "evaluation only" in help_text and "--steps" in help_text
    result = train_poisoner(env, "--p", "150")
    assert result.exit_code == 2 and "--p" in result.output
    result = train_poisoner(env, "--fb-loss", "ce")
    assert result.exit_code == 2 and "--fb-loss" in result.output
    result = train_poisoner(env, "--candidate", "poisoner-eraser", "--folds", "1")
    assert result.exit_code == 2 and "cross-fitting" in result.output
    result = train_poisoner(env, "--gce-q", "1.5")
    assert result.exit_code == 2 and "--gce-q" in result.output
    result = train_poisoner(env, "--contrast-temperature", "0")
    assert result.exit_code == 2 and "--contrast-temperature" in result.output


@pytest.mark.slow
def test_train_poisoner_with_an_evaluation_only_bias_column(
    env: Path, redis_client: object, key_prefix: str
) -> None:
    result = train_poisoner(env, "--bias", "race", "--candidate", "poisoner")
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    [patch] = answer["patches"]
    assert answer["method"] == "poisoner" and patch["name"] == "compas-poisoner"
    assert patch["bias"] == "race" and patch["kind"] == "poisoner"
    assert "evaluation only" in patch["groups"]
