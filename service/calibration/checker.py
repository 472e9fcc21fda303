"""Upload validation in a separate process, so the serving process stays lean and responsive.

Parsing a 64 MB CSV takes seconds of CPU and needs pyarrow and Pillow. Run in the gateway
process it would hold the GIL against the event loop and the patch-inference threads, and keep
those libraries (and the parser's memory) resident in every replica. One worker process,
started on the first upload with ``spawn`` (the gateway has threads, so ``fork`` is unsafe),
does it instead and is replaced after ``MAX_TASKS_PER_CHILD`` uploads so its memory is
returned.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from service.calibration.meta import CalibrationMeta
from service.errors import UploadCheckFailed
from service.jobs.audits import AuditInput, AuditSpec
from service.jobs.spec import TrainingJobSpec
from service.settings import ModelConfig, TrainingSettings

MAX_TASKS_PER_CHILD = 16


class UploadChecker:
    """``await check(...)`` validates an upload in the worker process; its CalibrationMeta, or
    the typed error (e.g. InvalidCalibrationSet) raised there."""

    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None

    async def check(
        self,
        data: bytes,
        filename: str | None,
        model: ModelConfig,
        spec: TrainingJobSpec,
        training: TrainingSettings,
        pairs: bytes | None = None,
    ) -> CalibrationMeta:
        """``pairs``: an FMD job's counterfactual pairs NPZ, validated with the set."""
        return await self._run(_check, data, filename, model, spec, training, pairs)

    async def check_audit(
        self,
        data: bytes,
        filename: str | None,
        pairs: bytes | None,
        model: ModelConfig,
        spec: AuditSpec,
        training: TrainingSettings,
    ) -> AuditInput:
        """Validate an audit's data file, attributes and pairs (``audit_input``); what it found,
        or the typed error (InvalidAuditInput) raised there."""
        return await self._run(_check_audit, data, filename, pairs, model, spec, training)

    async def _run(self, fn: Any, *args: Any) -> Any:
        pool = self._pool or self._start()
        job = pool.submit(fn, *args)
        try:
            return await asyncio.wrap_future(job)
        except BrokenProcessPool:
            self._pool = None  # the next upload gets a fresh process
            raise UploadCheckFailed(
                "the upload validation process died (out of memory?); try again"
            ) from None

    def _start(self) -> ProcessPoolExecutor:
        self._pool = ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("spawn"),
            max_tasks_per_child=MAX_TASKS_PER_CHILD,
        )
        return self._pool

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


def _check(
    data: bytes,
    filename: str | None,
    model: ModelConfig,
    spec: TrainingJobSpec,
    training: TrainingSettings,
    pairs: bytes | None = None,
) -> CalibrationMeta:
    """Runs in the worker process: only there are the readers (pyarrow, Pillow) imported."""
    from service.calibration.intake import check_upload

    return check_upload(data, filename, model, spec, training, pairs)[1]


def _check_audit(
    data: bytes,
    filename: str | None,
    pairs: bytes | None,
    model: ModelConfig,
    spec: AuditSpec,
    training: TrainingSettings,
) -> AuditInput:
    """Runs in the worker process, like ``_check``."""
    from service.calibration.audit_input import load_audit_set

    max_rows = training.max_calibration_rows
    return load_audit_set(data, model, spec, max_rows, pairs, filename).describe()
