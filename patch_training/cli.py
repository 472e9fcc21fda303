"""``eraser train ...`` and ``eraser worker``: training from a terminal or as a queue worker.

PyTorch is imported inside the commands, never at import, so the gateway's CLI stays light.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Annotated, Literal

import typer

from patch_training.jobs.spec import Arch, DistillJobSpec, DistillResult
from service.settings import GatewaySettings

train_app = typer.Typer(help="Train debiasing patches from a calibration set.")


@train_app.command()
def distill(
    model: Annotated[str, typer.Option(help="gateway model name (the settings' model table)")],
    calibration: Annotated[
        Path, typer.Option(exists=True, dir_okay=False, help="CSV, Parquet, NPZ or zip of images")
    ],
    target: Annotated[str, typer.Option(help="target column")],
    bias: Annotated[
        list[str], typer.Option(help="bias column; repeat for several, one patch each")
    ],
    name: Annotated[str | None, typer.Option(help="patch name (default {model}-{bias})")] = None,
    activate: Annotated[bool, typer.Option(help="activate if the validation gate passes")] = False,
    enqueue: Annotated[bool, typer.Option(help="hand the job to `eraser worker`")] = False,
    arch: Annotated[str, typer.Option(help="auto | mlp | cnn | resnet18")] = "auto",
    epochs: Annotated[int, typer.Option(min=1)] = 300,
    seed: int = 0,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    folds: Annotated[int, typer.Option(help="cross-fitting folds; 1 = one held-out part")] = 4,
    holdout: Annotated[float, typer.Option(help="held-out fraction when --folds 1")] = 0.25,
) -> None:
    """Eraser rule distillation: query the black box, train, tune α, export, register."""
    settings = GatewaySettings()
    spec = DistillJobSpec(
        model=model,
        target=target,
        bias=bias,
        name=name,
        activate=activate,
        arch=_choice(arch, ("auto", "mlp", "cnn", "resnet18"), "--arch"),
        epochs=epochs,
        seed=seed,
        device=_choice(device, ("auto", "cpu", "cuda"), "--device"),
        folds=folds,
        holdout_fraction=holdout,
    )
    spec = asyncio.run(_store(settings, spec, calibration))
    if enqueue:
        typer.echo(json.dumps({"job_id": _enqueue(settings, spec)}))
        return
    typer.echo(_run_here(settings, spec).model_dump_json(indent=2))


def _choice(
    value: str, allowed: tuple[str, ...], hint: str
) -> Arch | Literal["auto", "cpu", "cuda"]:
    if value not in allowed:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(allowed)}", param_hint=hint)
    return value  # type: ignore[return-value]


async def _store(settings: GatewaySettings, spec: DistillJobSpec, path: Path) -> DistillJobSpec:
    """Validate and store the calibration file; the spec then names it by sha256."""
    from patch_training.jobs.context import open_context
    from patch_training.jobs.progress import JobProgress
    from patch_training.jobs.submit import check_upload
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


def _enqueue(settings: GatewaySettings, spec: DistillJobSpec) -> str:
    from patch_training.jobs.queue import enqueue_distill, sync_redis, training_queue

    queue = training_queue(sync_redis(settings), settings.training)
    return enqueue_distill(queue, spec, settings.training)


def _run_here(settings: GatewaySettings, spec: DistillJobSpec) -> DistillResult:
    from patch_training.jobs.entry import run_stored
    from patch_training.jobs.progress import JobProgress

    start = time.perf_counter()
    result = asyncio.run(run_stored(spec, settings, JobProgress()))
    typer.echo(f"done in {time.perf_counter() - start:.1f} s", err=True)
    return result


def worker(
    burst: Annotated[bool, typer.Option(help="exit when the queue is empty")] = False,
    queue: Annotated[str | None, typer.Option(help="queue name (default: settings)")] = None,
) -> None:
    """Run an RQ worker for training jobs (settings from ERASER_* / ERASER_CONFIG_FILE)."""
    from rq import Worker
    from rq.serializers import JSONSerializer

    import patch_training.jobs.entry  # noqa: F401  (PyTorch loaded once, before jobs fork)
    from patch_training.jobs.queue import sync_redis, training_queue

    settings = GatewaySettings()
    training = settings.training.model_copy(update={"queue": queue or settings.training.queue})
    connection = sync_redis(settings)
    rq_worker = Worker(
        [training_queue(connection, training)], connection=connection, serializer=JSONSerializer
    )
    rq_worker.work(burst=burst, with_scheduler=True)
