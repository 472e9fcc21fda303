"""A counterfactual bias audit as a job: in an RQ worker (``run_audit_job``) or in the CLI
(``run_audit_stored``).

Both read the stored inputs back by their sha256 and re-validate them with this process's model
table; query the black box once for the original rows and every counterfactual, through the
gateway's upstream client (``patch_training.blackbox``: batched, concurrent, retried, cached);
apply the model's active stack to the same raw answers, as the gateway would serve them; and
write the result and its PNG into the audit's record.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import numpy as np
from rq import get_current_job

from patch_training.audit import audit_attribute, ranked, render_png
from patch_training.blackbox import query_log_probs
from patch_training.jobs.context import JobContext, open_context
from patch_training.jobs.entry import is_permanent
from patch_training.jobs.progress import JobProgress, Snapshot
from service import eraser_math
from service.calibration.audit_input import AuditSet, load_audit_set
from service.jobs.audits import AuditResult, AuditSpec, ServedStack
from service.registry.keys import RegistryKeys
from service.registry.signing import canonical_json
from service.runtime.stack import LoadedStack, SessionCache, StackLoader
from service.settings import GatewaySettings, ModelConfig

log = logging.getLogger(__name__)

PATCH_BATCH = 1024  # rows per ONNX Runtime call


def run_audit_job(audit_id: str, spec: dict[str, Any]) -> dict[str, Any]:
    """The RQ job function (``service.jobs.audits.AUDIT_FUNCTION``): progress goes to the
    audit's record (and the job's meta); the result is stored in the record, and a short
    summary is the job's return value."""
    job = get_current_job()
    if job is None:
        raise RuntimeError("run_audit_job runs inside an RQ worker; use run_audit_stored otherwise")
    settings = GatewaySettings()
    key = RegistryKeys(settings.redis.key_prefix).audit(audit_id)

    def publish(snapshot: Snapshot) -> None:
        job.meta["progress"] = snapshot
        job.save_meta()
        job.connection.hset(key, "progress", canonical_json(snapshot))

    try:
        result = asyncio.run(
            run_audit_stored(
                audit_id, AuditSpec.model_validate(spec), settings, JobProgress(publish=publish)
            )
        )
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"
        job.meta["error"] = reason
        job.save_meta()
        job.connection.hset(key, mapping={"state": "failed", "error": reason})
        if is_permanent(exc):
            job.retries_left = 0
        log.error("audit %s failed: %s", audit_id, reason)
        raise
    return {"audit_id": audit_id, "ranking": [r.model_dump() for r in result.ranking]}


async def run_audit_stored(
    audit_id: str, spec: AuditSpec, settings: GatewaySettings, progress: JobProgress
) -> AuditResult:
    """Load the stored inputs named by the spec, run the audit, store its result."""
    if spec.data_id is None:
        raise ValueError("the audit spec names no stored data file")
    async with open_context(settings, progress, audit_id) as ctx:
        assert ctx.audits is not None
        await ctx.audits.set_state(audit_id, "started")
        data = await ctx.audits.get_input(spec.data_id)
        pairs = await ctx.audits.get_input(spec.pairs_id) if spec.pairs_id else None
        model = ctx.model(spec.model)
        audit_set = load_audit_set(
            data,
            model,
            spec,
            settings.training.max_calibration_rows,
            pairs,
            spec.data_filename,
        )
        result, png = await run_audit(spec, audit_set, model, ctx)
        await ctx.audits.put_result(audit_id, result, png)
        return result


async def run_audit(
    spec: AuditSpec, audit_set: AuditSet, model: ModelConfig, ctx: JobContext
) -> tuple[AuditResult, bytes]:
    """Query, apply the served stack, measure; the result and its PNG."""
    timings: dict[str, float] = {}
    start = time.perf_counter()
    x = audit_set.x
    shape = x.shape[1:]
    parts = [x, *(a.x_cf.reshape(-1, *shape) for a in audit_set.attributes)]
    everything = np.concatenate(parts)
    training = ctx.settings.training
    with ctx.progress.stage("black box", len(everything), unit="row") as advance:
        answers = await query_log_probs(
            model,
            everything,
            ctx.cache,
            batch_size=training.query_batch_size,
            concurrency=training.query_concurrency,
            progress=advance,
        )
    timings["query"] = time.perf_counter() - start
    stack = await _active_stack(ctx, model)
    served_all = None
    if stack is not None:
        with ctx.progress.stage("served stack", len(everything), unit="row") as advance:
            served_all = await asyncio.to_thread(_served, stack, everything, answers.log_p, advance)
    timings["stack"] = time.perf_counter() - start - timings["query"]
    audits, changes = [], {}
    with ctx.progress.stage("measure", len(audit_set.attributes), unit="attribute") as advance:
        offset = len(x)
        for i, attribute in enumerate(audit_set.attributes):
            m = attribute.per_row
            span = slice(offset, offset + len(x) * m)
            offset += len(x) * m

            def split(log_p: np.ndarray, span: slice = span, m: int = m) -> tuple:
                return log_p[: len(x)], log_p[span].reshape(len(x), m, -1)

            audit, per_row = audit_attribute(
                name=attribute.name,
                source=attribute.source,
                values=attribute.values,
                groups=attribute.groups,
                classes=model.classes,
                raw=split(answers.log_p),
                served=split(served_all) if served_all is not None else None,
                draws=spec.draws,
                confidence=spec.confidence,
                top_rows=spec.top_rows,
                seed=spec.seed + i,
            )
            audits.append(audit)
            changes[attribute.name] = per_row
            advance(1)
    order, ranking = ranked(audits)
    timings["measure"] = time.perf_counter() - start - timings["query"] - timings["stack"]
    title = f"{model.name}: counterfactual bias on {len(x)} rows"
    if stack is not None:
        title += f" (served: stack revision {stack.revision})"
    png = render_png(order, changes, title)
    timings["total"] = time.perf_counter() - start
    result = AuditResult(
        model=model.name,
        rows=len(x),
        confidence=spec.confidence,
        draws=spec.draws,
        ranking=ranking,
        attributes=order,
        stack=ServedStack(revision=stack.revision, patches=stack.describe()) if stack else None,
        queried_rows=len(everything),
        cached_outputs=answers.cached,
        cache_entry_refused=answers.refused,
        timings_s={k: round(v, 3) for k, v in timings.items()},
        rows_per_second=round(len(everything) / max(timings["query"], 1e-9), 1),
    )
    return result, png


async def _active_stack(ctx: JobContext, model: ModelConfig) -> LoadedStack | None:
    """The model's active stack, loaded and checked as a gateway replica loads it (signatures,
    hashes, signed status, α range, the ONNX contract); None when it has no patches."""
    stack = await ctx.registry.get_stack(model.name)
    if not stack.entries:
        return None
    runtime = ctx.settings.runtime.model_copy(update={"use_gpu": False})
    loader = StackLoader(ctx.registry, runtime, SessionCache())

    async def run_blocking(fn: Any, *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    return await loader.load(stack, model, run_blocking)


def _served(stack: LoadedStack, x: np.ndarray, raw: np.ndarray, advance: Any) -> np.ndarray:
    """What the gateway answers for ``x`` given the black box's ``raw`` answers: the stack's
    log G on the same inputs, combined by ``eraser_math.fair_log_probs`` (Eq. 21)."""
    out = np.empty_like(raw)
    for start in range(0, len(x), PATCH_BATCH):
        stop = min(len(x), start + PATCH_BATCH)
        log_biases = stack.run(x[start:stop], on_patch=lambda *_: None)
        out[start:stop] = eraser_math.fair_log_probs(raw[start:stop], log_biases, stack.alphas)
        advance(stop - start)
    return out
