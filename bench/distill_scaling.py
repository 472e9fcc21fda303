"""How one Eraser distill job's time grows with the calibration set (issue 17 §1).

The vendored COMPAS calibration rows are resampled (with replacement, seeded) to N rows and one
cold ``eraser train eraser`` is run per N as a fresh process against the stand-in black box, the
way ``bench.distill`` runs the 1k-row job: the wall time covers interpreter and PyTorch start,
reading and validating the file, querying the black box (its cache is cleared first), the fold
nets, α tuning, ONNX export with the parity check, the gate and the registration in Redis under
this module's own key prefix. The job's own stage timings (query, train, verdict, register) come
from its JSON answer.

    python -m bench.distill_scaling --rows 1000,10000,100000

``measure_distill_scaling(rows)`` answers ``{rows: wall seconds}`` for ``bench.perf``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import yaml

from bench.common import MODEL
from bench.servers import standin
from blackbox.data import BIAS, TARGET, compas_calibration_csv, compas_split, load_compas
from deploy.local.processes import CACHE, ROOT, clear_redis_prefix, standin_model_config

PREFIX = "eraser-distill-scaling"  # this benchmark's own Redis keys, cleared before and after
DEFAULT_ROWS = (1000, 10_000, 100_000)
WORK_DIR = CACHE / "bench" / "distill_scaling"


@dataclass(frozen=True)
class ScalingRun:
    """One N: the operator's wall time, the job's stages and what the gate decided."""

    rows: int
    wall_s: float
    stages_s: dict[str, float]
    tuning_rows: int
    verdict_rows: int
    status: str
    alpha: float

    @property
    def ms_per_row(self) -> float:
        return 1000 * self.wall_s / self.rows


def resampled_rows(n: int, seed: int = 0) -> np.ndarray:
    """``n`` indices into the COMPAS data drawn with replacement from its calibration split:
    an N-row set with the calibration rows' distribution (what issue 17 timed)."""
    if n < 1:
        raise ValueError(f"rows must be >= 1, got {n}")
    calib = compas_split(load_compas()).calib
    return np.random.default_rng(seed).choice(calib, size=n, replace=True)


def write_calibration(n: int, directory: Path, seed: int = 0) -> Path:
    """The resampled N-row calibration CSV, as an operator would upload it."""
    path = directory / f"compas_calibration_{n}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(compas_calibration_csv(load_compas(), resampled_rows(n, seed)))
    return path


def run_scaling(
    rows: list[int], seed: int = 0, prefix: str = PREFIX, directory: Path = WORK_DIR
) -> list[ScalingRun]:
    """One cold job per N, in the order given, against one stand-in black box; ``prefix``: the
    Redis keys the jobs use, cleared before and after each; ``directory``: where the
    calibration files and the gateway config are written."""
    runs = []
    with standin(0.0) as upstream:
        env = _env(upstream.url, directory, prefix)
        for n in rows:
            csv_path = write_calibration(n, directory, seed)
            clear_redis_prefix(prefix)  # no cached black-box answers, no earlier versions
            try:
                runs.append(_one_run(env, csv_path, n))
            finally:
                clear_redis_prefix(prefix)
    return runs


def measure_distill_scaling(
    rows: list[int], prefix: str = PREFIX, directory: Path = WORK_DIR
) -> dict[int, float]:
    """``{rows: wall seconds}`` of one cold distill job per N (``bench.perf``'s
    ``distill_rows_s``)."""
    return {run.rows: run.wall_s for run in run_scaling(rows, prefix=prefix, directory=directory)}


def scaling_result(rows: list[int]) -> dict[str, object]:
    """``bench.perf``'s keys: ``distill_rows_s`` ({rows: wall seconds}, string keys as JSON
    has them), ``distill_100k_s`` when 100,000 rows ran (the issue's ≤ 2 min target), and
    every run's stages under ``distill_scaling``."""
    from datetime import UTC, datetime

    runs = run_scaling(rows)
    out: dict[str, object] = {
        "distill_rows_s": {str(r.rows): r.wall_s for r in runs},
        "distill_scaling": {
            "runs": [asdict(r) | {"ms_per_row": round(r.ms_per_row, 3)} for r in runs],
            "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        },
    }
    if 100_000 in rows:
        out["distill_100k_s"] = next(r.wall_s for r in runs if r.rows == 100_000)
    return out


def _env(upstream_url: str, directory: Path, prefix: str) -> dict[str, str]:
    config = directory / "eraser-distill-scaling.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(yaml.safe_dump({"models": [standin_model_config(upstream_url, MODEL)]}))
    return {**os.environ, "ERASER_CONFIG_FILE": str(config), "ERASER_REDIS__KEY_PREFIX": prefix}


def cold_job(env: dict[str, str], csv_path: os.PathLike, name: str) -> tuple[float, dict]:
    """One ``eraser train eraser`` on the stand-in's COMPAS model as a fresh process: its wall
    time (s) and its JSON answer (shared with ``bench.distill``)."""
    args = [sys.executable, "-m", "patch_training.cli", "train", "eraser", "--model", MODEL,
            "--calibration", str(csv_path), "--target", TARGET, "--bias", BIAS,
            "--name", name]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"eraser train eraser on {csv_path} failed:\n{done.stderr[-2000:]}")
    return wall, json.loads(done.stdout)


def _one_run(env: dict[str, str], csv_path: Path, n: int) -> ScalingRun:
    wall, result = cold_job(env, csv_path, "scaling-race")
    patch = result["patches"][0]
    return ScalingRun(
        rows=n,
        wall_s=round(wall, 2),
        stages_s=result["timings_s"],
        tuning_rows=result["tuning_rows"],
        verdict_rows=result["verdict_rows"],
        status=patch["status"],
        alpha=patch["alpha"],
    )


def table(runs: list[ScalingRun]) -> str:
    """A markdown table: rows, wall time, time per row and the job's stages."""
    stages = sorted({s for r in runs for s in r.stages_s})
    head = ["rows", "wall s", "ms / row", *(f"{s} s" for s in stages), "gate"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in runs:
        cells = [f"{r.rows:,}", f"{r.wall_s:.1f}", f"{r.ms_per_row:.2f}"]
        cells += [f"{r.stages_s.get(s, 0.0):.1f}" for s in stages]
        lines.append("| " + " | ".join([*cells, r.status]) + " |")
    return "\n".join(lines)


def _rows_arg(text: str) -> list[int]:
    try:
        rows = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--rows takes comma-separated integers: {text}") from exc
    if not rows or min(rows) < 1:
        raise argparse.ArgumentTypeError(f"--rows needs positive row counts: {text}")
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=_rows_arg, default=list(DEFAULT_ROWS))
    parser.add_argument("--seed", type=int, default=0, help="the resampling seed")
    parser.add_argument("--json", type=Path, help="also write every run as JSON here")
    args = parser.parse_args(argv)
    runs = []
    for n in args.rows:  # one at a time, so a long N still prints the ones before it
        runs += run_scaling([n], args.seed)
        r = runs[-1]
        print(f"{n} rows: {r.wall_s:.1f} s, stages {r.stages_s}, {r.status}", flush=True)
    print(table(runs))
    if args.json is not None:
        payload = [asdict(r) | {"ms_per_row": round(r.ms_per_row, 3)} for r in runs]
        args.json.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
