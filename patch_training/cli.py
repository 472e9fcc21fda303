"""``eraser``: the operator's command line — ``eraser train <method>`` and ``eraser worker``.

Option defaults are the job spec's (``service.jobs.spec.TrainingJobSpec``): an option left out
is left to the spec. PyTorch is imported inside the commands, never at import. The gateway has
its own command, ``eraser-gateway serve`` (``service.cli``), so the serving process never loads
training code.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from service.jobs.spec import METHODS, JobResult, TrainingJobSpec
from service.settings import GatewaySettings

app = typer.Typer(help="Eraser Gateway training: build debiasing patches from calibration sets.")
train_app = typer.Typer(help="Train a patch from a calibration set (one command per method).")
app.add_typer(train_app, name="train")

SPEC = TrainingJobSpec.model_fields
OPTION_OF = {"holdout_fraction": "--holdout"}  # spec fields whose option is named otherwise


def _default(field: str) -> Any:
    return SPEC[field].get_default(call_default_factory=True)


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="debug logging")) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _train_command(method: str) -> Any:
    def command(
        model: Annotated[str, typer.Option(help="gateway model name (the settings' model table)")],
        calibration: Annotated[
            Path,
            typer.Option(exists=True, dir_okay=False, help="CSV, Parquet, NPZ or zip of images"),
        ],
        target: Annotated[str, typer.Option(help=SPEC["target"].description)],
        bias: Annotated[list[str], typer.Option(help="bias column; repeat for one patch each")],
        name: Annotated[str | None, typer.Option(help=SPEC["name"].description)] = None,
        activate: Annotated[bool, typer.Option(help=SPEC["activate"].description)] = False,
        enqueue: Annotated[bool, typer.Option(help="hand the job to `eraser worker`")] = False,
        arch: Annotated[str, typer.Option(help="auto | mlp | cnn | resnet18")] = _default("arch"),
        epochs: Annotated[int, typer.Option(min=1)] = _default("epochs"),
        seed: int = _default("seed"),
        device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = _default("device"),
        folds: Annotated[int, typer.Option(help=SPEC["folds"].description)] = _default("folds"),
        holdout: Annotated[
            float, typer.Option(help=SPEC["holdout_fraction"].description)
        ] = _default("holdout_fraction"),
    ) -> None:
        fields = {
            "method": method, "model": model, "target": target, "bias": bias, "name": name,
            "activate": activate, "arch": arch, "epochs": epochs, "seed": seed,
            "device": device, "folds": folds, "holdout_fraction": holdout,
        }  # fmt: skip
        spec = _spec(fields)
        settings = GatewaySettings()
        spec = asyncio.run(_store(settings, spec, calibration))
        if enqueue:
            typer.echo(json.dumps({"job_id": _enqueue(settings, spec)}))
            return
        typer.echo(_run_here(settings, spec).model_dump_json(indent=2))

    command.__doc__ = f"{method}: query the black box, train, tune α, gate, export, register."
    return command


for _method in METHODS:
    train_app.command(name=_method)(_train_command(_method))


def _spec(fields: dict[str, Any]) -> TrainingJobSpec:
    """The spec, with a bad value reported against its option like any other usage error."""
    from pydantic import ValidationError

    try:
        return TrainingJobSpec.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0])
        option = OPTION_OF.get(field, "--" + field.replace("_", "-"))
        raise typer.BadParameter(first["msg"], param_hint=option) from None


async def _store(settings: GatewaySettings, spec: TrainingJobSpec, path: Path) -> TrainingJobSpec:
    """Validate and store the calibration file; the spec then names it by sha256."""
    from patch_training.jobs.context import open_context
    from patch_training.jobs.progress import JobProgress
    from service.calibration.intake import check_upload
    from service.errors import EraserError

    data = path.read_bytes()
    async with open_context(settings, JobProgress(show_bars=False)) as ctx:
        try:
            model = ctx.model(spec.model)
        except EraserError as exc:
            raise typer.BadParameter(exc.message, param_hint="--model") from None
        try:
            _, meta = check_upload(data, path.name, model, spec, settings.training)
        except EraserError as exc:
            raise typer.BadParameter(exc.message, param_hint="--calibration") from None
        await ctx.calibrations.put(data, meta)
    return spec.model_copy(update={"calibration_set_id": meta.sha256})


def _enqueue(settings: GatewaySettings, spec: TrainingJobSpec) -> str:
    from service.jobs.queue import enqueue_job, sync_redis, training_queue

    queue = training_queue(sync_redis(settings), settings.training)
    return enqueue_job(queue, spec, settings.training)


def _run_here(settings: GatewaySettings, spec: TrainingJobSpec) -> JobResult:
    from patch_training.jobs.entry import run_stored
    from patch_training.jobs.progress import JobProgress

    start = time.perf_counter()
    result = asyncio.run(run_stored(spec, settings, JobProgress()))
    typer.echo(f"done in {time.perf_counter() - start:.1f} s", err=True)
    if result.cache_entry_refused is not None:  # also in the JSON; said here so it is not missed
        typer.echo(
            f"warning: cached black-box answers refused ({result.cache_entry_refused}); "
            "queried the black box again and replaced the entry — check who writes to Redis",
            err=True,
        )
    return result


@app.command()
def worker(
    burst: Annotated[bool, typer.Option(help="exit when the queue is empty")] = False,
    queue: Annotated[str | None, typer.Option(help="queue name (default: settings)")] = None,
) -> None:
    """Run an RQ worker for the jobs that POST /patches queues (settings from ERASER_*)."""
    from rq import Worker
    from rq.serializers import JSONSerializer

    import patch_training.jobs.entry  # noqa: F401  (PyTorch loaded once, before jobs fork)
    from service.jobs.queue import sync_redis, training_queue

    settings = GatewaySettings()
    training = settings.training.model_copy(update={"queue": queue or settings.training.queue})
    connection = sync_redis(settings)
    rq_worker = Worker(
        [training_queue(connection, training)], connection=connection, serializer=JSONSerializer
    )
    rq_worker.work(burst=burst, with_scheduler=True)


if __name__ == "__main__":
    app()
