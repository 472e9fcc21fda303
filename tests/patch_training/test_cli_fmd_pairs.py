"""``eraser train fmd --pairs``: the counterfactual pairs of an attribute that is not an input
are validated with the calibration file, stored by hash and named by the job's spec."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import redis
from rq.job import Job
from rq.serializers import JSONSerializer
from typer.testing import CliRunner

from blackbox.data import compas_calibration_csv, load_compas
from deploy.local.processes import standin_model_config
from patch_training.cli import app
from service.registry.signing import sha256_hex
from tests.conftest import REDIS_URL
from tests.patch_training.conftest import cli_environment

DATA = load_compas()  # the stand-in takes no race input: race needs pairs
ROWS = np.arange(200)


@pytest.fixture
def calib(tmp_path: Path, key_prefix: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    model = standin_model_config("http://127.0.0.1:9")  # nothing is queried with --enqueue
    cli_environment(monkeypatch, tmp_path, [model], key_prefix)
    path = tmp_path / "calib.csv"
    path.write_bytes(compas_calibration_csv(DATA, ROWS))
    return path


def write_npz(path: Path, **arrays: np.ndarray) -> Path:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path.write_bytes(buf.getvalue())
    return path


def train_fmd(calib: Path, pairs: Path, *extra: str) -> object:
    args = ["train", "fmd", "--model", "compas", "--calibration", str(calib)]
    args += ["--target", "two_year_recid", "--bias", "race", "--pairs", str(pairs), *extra]
    return CliRunner().invoke(app, args)


def test_pairs_are_stored_and_named_by_the_enqueued_job(
    calib: Path, redis_client: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.jobs.queue import sync_redis
    from service.settings import GatewaySettings
    from tests.workers import remove_queue, with_own_queue

    settings = with_own_queue(GatewaySettings())
    monkeypatch.setenv("ERASER_TRAINING__QUEUE", settings.training.queue)
    pairs = write_npz(calib.parent / "pairs.npz", x_cf=DATA.X[ROWS[::-1]])  # any x̄ of its shape
    try:
        result = train_fmd(calib, pairs, "--enqueue")
        assert result.exit_code == 0, result.output
        job_id = json.loads(result.stdout)["job_id"]
        with sync_redis(settings) as connection:
            spec = Job.fetch(job_id, connection=connection, serializer=JSONSerializer).args[0]
            digest = sha256_hex(pairs.read_bytes())
            assert spec["method"] == "fmd" and spec["pairs_id"] == digest
            stored = connection.get(f"{settings.redis.key_prefix}:calibration:{digest}")
            assert stored == pairs.read_bytes()
    finally:
        remove_queue(settings)


def test_bad_pairs_are_a_usage_error_naming_the_flags_and_store_nothing(
    calib: Path, redis_client: object, key_prefix: str
) -> None:
    pairs = write_npz(calib.parent / "pairs.npz", x_cf=DATA.X[:7])
    result = train_fmd(calib, pairs)
    assert result.exit_code == 2, result.output
    assert "has 7 rows" in result.output and "--pairs" in result.output
    with redis.Redis.from_url(REDIS_URL) as client:
        assert list(client.scan_iter(match=f"{key_prefix}:*")) == []
    help_text = CliRunner().invoke(app, ["train", "fmd", "--help"]).output
    assert "--pairs" in help_text
