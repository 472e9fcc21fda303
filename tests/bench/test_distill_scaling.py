"""bench.distill_scaling: the resampled COMPAS sets, the table, the command line, and (slow) one
real job end to end against the stand-in black box and Redis under the test's own prefix."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest

from bench.distill_scaling import (
    ScalingRun,
    main,
    measure_distill_scaling,
    resampled_rows,
    run_scaling,
    table,
    write_calibration,
)
from blackbox.data import BIAS, TARGET, compas_split, load_compas
from deploy.local.processes import clear_redis_prefix

PREFIX = "eraser-test-distill-scaling"


def test_resampled_rows_come_from_the_calibration_split_and_are_seeded() -> None:
    calib = set(compas_split(load_compas()).calib.tolist())
    rows = resampled_rows(5000, seed=3)
    assert rows.shape == (5000,)
    assert set(rows.tolist()) <= calib
    assert len(set(rows.tolist())) > 0.5 * len(calib)  # with replacement, most rows appear
    assert np.array_equal(rows, resampled_rows(5000, seed=3))
    assert not np.array_equal(rows, resampled_rows(5000, seed=4))


def test_no_rows_is_refused() -> None:
    with pytest.raises(ValueError, match="rows must be >= 1"):
        resampled_rows(0)


def test_the_calibration_file_has_n_rows_and_the_job_columns(tmp_path: Path) -> None:
    path = write_calibration(37, tmp_path)
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    assert len(rows) == 37
    assert {TARGET, BIAS} <= set(rows[0])


def test_table_lists_every_run_with_its_time_per_row() -> None:
    runs = [
        ScalingRun(1000, 12.0, {"train": 5.0, "query": 0.1}, 700, 300, "validated", 1.0),
        ScalingRun(10_000, 30.0, {"train": 20.0, "query": 0.2}, 7000, 3000, "rejected", 0.5),
    ]
    lines = table(runs).splitlines()
    assert lines[0] == "| rows | wall s | ms / row | query s | train s | gate |"
    assert lines[2] == "| 1,000 | 12.0 | 12.00 | 0.1 | 5.0 | validated |"
    assert lines[3] == "| 10,000 | 30.0 | 3.00 | 0.2 | 20.0 | rejected |"


@pytest.mark.parametrize("rows", ["", "1000,x", "0", "-5"])
def test_bad_rows_are_refused_by_the_command_line(rows: str) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--rows", rows])
    assert exc.value.code == 2


@pytest.mark.slow
def test_one_small_job_runs_end_to_end_and_cleans_up(tmp_path: Path) -> None:
    import redis

    runs = run_scaling([300], prefix=PREFIX, directory=tmp_path)
    (run,) = runs
    assert run.rows == 300 and run.wall_s > 0
    assert run.tuning_rows + run.verdict_rows == 300
    assert {"query", "train", "verdict", "register"} <= set(run.stages_s)
    assert run.status in ("validated", "rejected")
    with redis.Redis.from_url("redis://127.0.0.1:6379/0") as client:
        assert not list(client.scan_iter(match=f"{PREFIX}:*"))
    clear_redis_prefix(PREFIX)


@pytest.mark.slow
def test_measure_distill_scaling_answers_seconds_per_row_count(tmp_path: Path) -> None:
    try:
        answer = measure_distill_scaling([200], prefix=PREFIX, directory=tmp_path)
    finally:
        clear_redis_prefix(PREFIX)
    assert list(answer) == [200]
    assert answer[200] > 0


def test_perf_markdown_shows_the_scaling_table_only_when_measured() -> None:
    from bench.markdown import scaling_text
    from bench.report import target_met

    run = {"rows": 100_000, "wall_s": 61.0, "stages_s": {"query": 1.5, "train": 50.0},
           "tuning_rows": 70_000, "verdict_rows": 30_000, "status": "validated", "alpha": 1.0,
           "ms_per_row": 0.61}  # fmt: skip
    text = "\n".join(scaling_text({"distill_scaling": {"runs": [run], "measured_at": "today"}}))
    assert "| 100,000 | 61.0 | 0.61 | 1.5 | 50.0 | validated |" in text and "today" in text
    assert scaling_text({}) == []
    assert target_met("distill_100k_s", 119.0) and not target_met("distill_100k_s", 121.0)
