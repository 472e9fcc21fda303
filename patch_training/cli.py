"""``eraser``: the operator's command line — ``eraser train <method>``, ``eraser audit`` and
``eraser worker``.

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
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from service.jobs.audits import AuditSpec
from service.jobs.spec import METHODS, FmdConfig, JobResult, PoisonerConfig, TrainingJobSpec
from service.settings import GatewaySettings

if TYPE_CHECKING:
    from pydantic import BaseModel
    from pydantic.fields import FieldInfo
    from rq import Queue

    from patch_training.jobs.context import JobContext

M = TypeVar("M", bound="BaseModel")
Loc = tuple[int | str, ...]  # where a validation error is: field names and indices

app = typer.Typer(help="Eraser Gateway training: build debiasing patches from calibration sets.")
train_app = typer.Typer(help="Train a patch from a calibration set (one command per method).")
app.add_typer(train_app, name="train")

SPEC = TrainingJobSpec.model_fields
POISONER = PoisonerConfig.model_fields
FMD = FmdConfig.model_fields
OPTION_OF = {"holdout_fraction": "--holdout"}  # spec fields whose option is named otherwise
POISONER_OPTION_OF = {  # PoisonerConfig fields → their options on `eraser train poisoner`
    "steps": "--steps",
    "p": "--p",
    "batch_size": "--fb-batch",
    "loss": "--fb-loss",
    "warmup_steps": "--warmup",
    "q": "--gce-q",
    "contrast_temperature": "--contrast-temperature",
    "candidates": "--candidate",
}


FMD_OPTION_OF = {  # FmdConfig fields → their options on `eraser train fmd`
    "hidden": "--surrogate-hidden",
    "epochs": "--surrogate-epochs",
    "l2": "--l2",
    "k_grid": "--k",
    "targets": "--targets",
    "max_avg_acc_drop_pp": "--max-avg-acc-drop",
}


def _defaults(fields: dict[str, FieldInfo]) -> dict[str, Any]:
    """Each optional field's default, as the options' defaults (an option left out is the
    spec's own default)."""
    return {
        name: info.get_default(call_default_factory=True)
        for name, info in fields.items()
        if not info.is_required()
    }


DEFAULT, POISONER_DEFAULT, FMD_DEFAULT = _defaults(SPEC), _defaults(POISONER), _defaults(FMD)


# Options that several commands take, with the same meaning and help (defaults stay per use).
ModelOption = Annotated[str, typer.Option(help="gateway model name (the settings' model table)")]
CalibrationOption = Annotated[
    Path, typer.Option(exists=True, dir_okay=False, help="CSV, Parquet, NPZ or zip of images")
]
TargetOption = Annotated[str, typer.Option(help=SPEC["target"].description)]
ActivateOption = Annotated[bool, typer.Option(help=SPEC["activate"].description)]
EnqueueOption = Annotated[bool, typer.Option(help="hand the job to `eraser worker`")]
ArchOption = Annotated[str, typer.Option(help="auto | mlp | cnn | resnet18")]
DeviceOption = Annotated[str, typer.Option(help="auto | cpu | cuda")]
FoldsOption = Annotated[int, typer.Option(help=SPEC["folds"].description)]
HoldoutOption = Annotated[float, typer.Option(help=SPEC["holdout_fraction"].description)]


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="debug logging")) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _train_command(method: str) -> Any:
    def command(
        model: ModelOption,
        calibration: CalibrationOption,
        target: TargetOption,
        bias: Annotated[list[str], typer.Option(help="bias column; repeat for one patch each")],
        name: Annotated[str | None, typer.Option(help=SPEC["name"].description)] = None,
        activate: ActivateOption = False,
        enqueue: EnqueueOption = False,
        arch: ArchOption = DEFAULT["arch"],
        epochs: Annotated[int, typer.Option(min=1)] = DEFAULT["epochs"],
        seed: int = DEFAULT["seed"],
        device: DeviceOption = DEFAULT["device"],
        folds: FoldsOption = DEFAULT["folds"],
        holdout: HoldoutOption = DEFAULT["holdout_fraction"],
    ) -> None:
        fields = {
            "method": method, "model": model, "target": target, "bias": bias, "name": name,
            "activate": activate, "arch": arch, "epochs": epochs, "seed": seed,
            "device": device, "folds": folds, "holdout_fraction": holdout,
        }  # fmt: skip
        _submit(fields, calibration, enqueue)

    command.__doc__ = f"{method}: query the black box, train, tune α, gate, export, register."
    return command


def _poisoner_command() -> Any:
    def command(
        model: ModelOption,
        calibration: CalibrationOption,
        target: TargetOption,
        bias: Annotated[
            str | None,
            typer.Option(
                help="bias column, evaluation only (the gate and the report): never trained "
                "on; without it the gate judges pseudo-groups y × f_B's class"
            ),
        ] = None,
        name: Annotated[
            str | None, typer.Option(help="patch name (default '{model}-poisoner')")
        ] = None,
        activate: ActivateOption = False,
        enqueue: EnqueueOption = False,
        steps: Annotated[int, typer.Option(min=1, help=POISONER["steps"].description)] = (
            POISONER_DEFAULT["steps"]
        ),
        p: Annotated[float, typer.Option(help=POISONER["p"].description)] = POISONER_DEFAULT["p"],
        fb_batch: Annotated[int, typer.Option(help=POISONER["batch_size"].description)] = (
            POISONER_DEFAULT["batch_size"]
        ),
        fb_loss: Annotated[str, typer.Option(help="poison | gce (f_B's training)")] = (
            POISONER_DEFAULT["loss"]
        ),
        warmup: Annotated[int, typer.Option(help=POISONER["warmup_steps"].description)] = (
            POISONER_DEFAULT["warmup_steps"]
        ),
        gce_q: Annotated[float, typer.Option(help=POISONER["q"].description)] = (
            POISONER_DEFAULT["q"]
        ),
        contrast_temperature: Annotated[
            float, typer.Option(help=POISONER["contrast_temperature"].description)
        ] = POISONER_DEFAULT["contrast_temperature"],
        candidate: Annotated[
            list[str] | None,
            typer.Option(help="poisoner | poisoner-eraser; repeat for both (default: both)"),
        ] = None,
        arch: ArchOption = DEFAULT["arch"],
        epochs: Annotated[
            int, typer.Option(min=1, help="most epochs of the poisoner-eraser's Eraser net")
        ] = DEFAULT["epochs"],
        seed: int = DEFAULT["seed"],
        device: DeviceOption = DEFAULT["device"],
        folds: FoldsOption = DEFAULT["folds"],
        holdout: HoldoutOption = DEFAULT["holdout_fraction"],
    ) -> None:
        poisoner: dict[str, Any] = {
            "steps": steps, "p": p, "batch_size": fb_batch, "loss": fb_loss,
            "warmup_steps": warmup, "q": gce_q, "contrast_temperature": contrast_temperature,
        }  # fmt: skip
        if candidate:
            poisoner["candidates"] = candidate
        fields = {
            "method": "poisoner", "model": model, "target": target,
            "bias": [bias] if bias else [], "name": name, "activate": activate, "arch": arch,
            "epochs": epochs, "seed": seed, "device": device, "folds": folds,
            "holdout_fraction": holdout, "poisoner": poisoner,
        }  # fmt: skip
        _submit(fields, calibration, enqueue)

    command.__doc__ = (
        "poisoner (label-free): train the biased model f_B on x and y only, build the "
        "tempered-f_B and pseudo-bias Eraser patches, gate both, keep the one the gate prefers."
    )
    return command


def _fmd_command() -> Any:
    def command(
        model: ModelOption,
        calibration: Annotated[
            Path, typer.Option(exists=True, dir_okay=False, help="CSV, Parquet or NPZ")
        ],
        target: TargetOption,
        bias: Annotated[
            list[str],
            typer.Option(
                help="the attribute: an input column of the model, set to its other values "
                "for the counterfactuals, or a column of the file with --pairs; repeat for "
                "one patch each"
            ),
        ],
        pairs: Annotated[
            Path | None,
            typer.Option(
                exists=True,
                dir_okay=False,
                help="NPZ of counterfactuals (x_cf or x_cf_<bias column>, row i the "
                "counterfactual of calibration row i) for attributes that are not input columns",
            ),
        ] = None,
        name: Annotated[str | None, typer.Option(help=SPEC["name"].description)] = None,
        activate: ActivateOption = False,
        enqueue: EnqueueOption = False,
        surrogate_hidden: Annotated[
            list[int] | None, typer.Option(help="surrogate hidden width; repeat per layer")
        ] = None,
        surrogate_epochs: Annotated[int, typer.Option(min=1, help=FMD["epochs"].description)] = (
            FMD_DEFAULT["epochs"]
        ),
        l2: Annotated[float, typer.Option(help=FMD["l2"].description)] = FMD_DEFAULT["l2"],
        k: Annotated[
            list[float] | None,
            typer.Option(help="K as a fraction of the fit rows; repeat for the grid"),
        ] = None,
        targets: Annotated[str, typer.Option(help="labels | black_box")] = FMD_DEFAULT["targets"],
        max_avg_acc_drop: Annotated[
            float, typer.Option(help=FMD["max_avg_acc_drop_pp"].description)
        ] = FMD_DEFAULT["max_avg_acc_drop_pp"],
        seed: int = DEFAULT["seed"],
        device: DeviceOption = DEFAULT["device"],
        folds: FoldsOption = DEFAULT["folds"],
        holdout: HoldoutOption = DEFAULT["holdout_fraction"],
    ) -> None:
        fmd: dict[str, Any] = {
            "epochs": surrogate_epochs, "l2": l2, "targets": targets,
            "max_avg_acc_drop_pp": max_avg_acc_drop,
        }  # fmt: skip
        if surrogate_hidden:
            fmd["hidden"] = surrogate_hidden
        if k:
            fmd["k_grid"] = k
        fields = {
            "method": "fmd", "model": model, "target": target, "bias": bias, "name": name,
            "activate": activate, "seed": seed, "device": device, "folds": folds,
            "holdout_fraction": holdout, "fmd": fmd,
        }  # fmt: skip
        _submit(fields, calibration, enqueue, pairs)

    command.__doc__ = (
        "fmd: distil a surrogate, unlearn the rows most harmful to counterfactual fairness on "
        "the attribute (an input column, or uploaded pairs) with one Newton step, serve "
        "log S − log S'."
    )
    return command


def _submit(
    fields: dict[str, Any], calibration: Path, enqueue: bool, pairs: Path | None = None
) -> None:
    """Validate the spec, store the calibration file (and an FMD job's pairs), then run the job
    here or enqueue it."""
    spec = _spec(fields)
    settings = GatewaySettings()
    spec = asyncio.run(_store(settings, spec, calibration, pairs))
    if enqueue:
        typer.echo(json.dumps({"job_id": _enqueue(settings, spec)}))
        return
    typer.echo(_run_here(settings, spec).model_dump_json(indent=2))


_COMMANDS = {"poisoner": _poisoner_command, "fmd": _fmd_command}
for _method in METHODS:
    maker = _COMMANDS.get(_method, lambda m=_method: _train_command(m))
    train_app.command(name=_method)(maker())


def _validated(model: type[M], fields: dict[str, Any], option_of: Callable[[Loc], str | None]) -> M:
    """``model`` from the options' ``fields``; a bad value is reported against the option that
    set it (``option_of`` the error's location) like any other usage error."""
    from pydantic import ValidationError

    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise typer.BadParameter(first["msg"], param_hint=option_of(first["loc"])) from None


def _spec(fields: dict[str, Any]) -> TrainingJobSpec:
    """The spec, with a bad value reported against its option like any other usage error."""
    return _validated(TrainingJobSpec, fields, _train_option)


def _train_option(loc: Loc) -> str | None:
    if not loc:  # a rule across fields (e.g. folds and candidates)
        return None
    field = str(loc[0])
    if field == "poisoner" and len(loc) > 1:
        return POISONER_OPTION_OF.get(str(loc[1]), "--" + str(loc[1]))
    if field == "fmd" and len(loc) > 1:
        return FMD_OPTION_OF.get(str(loc[1]), "--" + str(loc[1]))
    return OPTION_OF.get(field, "--" + field.replace("_", "-"))


async def _store(
    settings: GatewaySettings, spec: TrainingJobSpec, path: Path, pairs: Path | None = None
) -> TrainingJobSpec:
    """Validate and store the calibration file (and the pairs); the spec then names them by
    sha256."""
    from service.calibration.intake import check_upload

    data = path.read_bytes()
    pairs_bytes = pairs.read_bytes() if pairs is not None else None
    async with _context(settings) as ctx:
        with _usage_error("--model"):
            model = ctx.model(spec.model)
        with _usage_error("--calibration/--pairs" if pairs is not None else "--calibration"):
            _, meta = check_upload(data, path.name, model, spec, settings.training, pairs_bytes)
        await ctx.calibrations.put(data, meta)
        stored = {"calibration_set_id": meta.sha256}
        if pairs_bytes is not None:
            stored["pairs_id"] = await ctx.calibrations.put_pairs(pairs_bytes)
    return spec.model_copy(update=stored)


@asynccontextmanager
async def _context(settings: GatewaySettings) -> AsyncIterator[JobContext]:
    """The stores a command writes its inputs to before a job runs (no progress bars)."""
    from patch_training.jobs.context import open_context
    from patch_training.jobs.progress import JobProgress

    async with open_context(settings, JobProgress(show_bars=False)) as ctx:
        yield ctx


@contextmanager
def _usage_error(param_hint: str) -> Iterator[None]:
    """A bad input (an ``EraserError``) reported against the options that supplied it."""
    from service.errors import EraserError

    try:
        yield
    except EraserError as exc:
        raise typer.BadParameter(exc.message, param_hint=param_hint) from None


def _queue(settings: GatewaySettings) -> Queue:
    """The queue `eraser worker` takes jobs and audits from."""
    from service.jobs.queue import sync_redis, training_queue

    return training_queue(sync_redis(settings), settings.training)


def _enqueue(settings: GatewaySettings, spec: TrainingJobSpec) -> str:
    from service.jobs.queue import enqueue_job

    return enqueue_job(_queue(settings), spec, settings.training)


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


AUDIT = AuditSpec.model_fields


@app.command()
def audit(
    model: ModelOption,
    data: Annotated[
        Path,
        typer.Option(exists=True, dir_okay=False, help="CSV or Parquet (features) or NPZ (x)"),
    ],
    attribute: Annotated[
        list[str], typer.Option(help="attribute to audit; repeat to audit and rank several")
    ],
    pairs: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="NPZ of counterfactuals (x_cf or x_cf_<attribute>) for attributes that are "
            "not input columns",
        ),
    ] = None,
    values: Annotated[
        list[str] | None,
        typer.Option(
            "--values", help="COLUMN=v1,v2,...: the values an input-column attribute can take"
        ),
    ] = None,
    draws: Annotated[int, typer.Option(help=AUDIT["draws"].description)] = AUDIT["draws"].default,
    seed: int = AUDIT["seed"].default,
    top_rows: Annotated[int, typer.Option(help=AUDIT["top_rows"].description)] = AUDIT[
        "top_rows"
    ].default,
    plot: Annotated[
        Path | None, typer.Option(dir_okay=False, help="also write the PNG here")
    ] = None,
    enqueue: Annotated[bool, typer.Option(help="hand the audit to `eraser worker`")] = False,
) -> None:
    """Counterfactual bias of the raw black box and of the served answers, per attribute."""
    fields = {
        "model": model, "attributes": attribute, "values": _values(values or []),
        "draws": draws, "seed": seed, "top_rows": top_rows,
    }  # fmt: skip
    spec = _audit_spec(fields)
    settings = GatewaySettings()
    audit_id, spec = asyncio.run(_store_audit(settings, spec, data, pairs))
    if enqueue:
        from service.jobs.audits import enqueue_audit

        queue = _queue(settings)
        typer.echo(
            json.dumps({"audit_id": enqueue_audit(queue, audit_id, spec, settings.training)})
        )
        return
    from patch_training.jobs.audit_entry import run_audit_stored
    from patch_training.jobs.progress import JobProgress

    result = asyncio.run(run_audit_stored(audit_id, spec, settings, JobProgress()))
    if plot is not None:
        plot.write_bytes(asyncio.run(_audit_png(settings, audit_id)))
    typer.echo(
        json.dumps({"audit_id": audit_id, "result": result.model_dump(mode="json")}, indent=2)
    )


def _values(items: list[str]) -> dict[str, list[float]]:
    """``COLUMN=v1,v2`` options as the spec's ``values``; a malformed one is a usage error."""
    out: dict[str, list[float]] = {}
    for item in items:
        column, sep, listed = item.partition("=")
        try:
            if not sep or not column:
                raise ValueError
            out[column] = [float(v) for v in listed.split(",")]
        except ValueError:
            raise typer.BadParameter(
                f"{item!r}: expected COLUMN=v1,v2,... with numbers", param_hint="--values"
            ) from None
    return out


def _audit_spec(fields: dict[str, Any]) -> AuditSpec:
    return _validated(AuditSpec, fields, _audit_option)


def _audit_option(loc: Loc) -> str:
    field = str(loc[0]) if loc else "attribute"
    return {"attributes": "--attribute", "top_rows": "--top-rows"}.get(field, f"--{field}")


async def _store_audit(
    settings: GatewaySettings, spec: AuditSpec, data: Path, pairs: Path | None
) -> tuple[str, AuditSpec]:
    """Validate the inputs (as POST /audits does), store them and the audit's record."""
    from service.calibration.audit_input import load_audit_set
    from service.jobs.audits import new_audit_id

    data_bytes = data.read_bytes()
    pairs_bytes = pairs.read_bytes() if pairs is not None else None
    async with _context(settings) as ctx:
        with _usage_error("--model"):
            config = ctx.model(spec.model)
        with _usage_error("--data/--pairs/--attribute"):
            found = load_audit_set(
                data_bytes,
                config,
                spec,
                settings.training.max_calibration_rows,
                pairs_bytes,
                data.name,
            ).describe()
        assert ctx.audits is not None
        stored = {"data_id": await ctx.audits.put_input(data_bytes), "data_filename": data.name}
        if pairs is not None and pairs_bytes is not None:
            stored |= {"pairs_id": await ctx.audits.put_input(pairs_bytes)}
            stored |= {"pairs_filename": pairs.name}
        spec = spec.model_copy(update=stored)
        audit_id = new_audit_id()
        await ctx.audits.create(audit_id, spec, found)
    return audit_id, spec


async def _audit_png(settings: GatewaySettings, audit_id: str) -> bytes:
    async with _context(settings) as ctx:
        assert ctx.audits is not None
        return await ctx.audits.png(audit_id)


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
