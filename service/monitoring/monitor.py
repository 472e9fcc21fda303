"""Bias monitoring for the routes: count a monitored request's decisions, keep them for
feedback, and count labelled feedback. Requests without ``monitor`` never reach this class."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import numpy as np
from redis.exceptions import RedisError

from service.errors import (
    FeedbackAlreadyRecorded,
    InvalidFeedback,
    ModelNotFound,
    MonitoringStoreUnavailable,
)
from service.monitoring.attributes import group_columns
from service.monitoring.bias_metrics import BiasMetrics, GroupColumns, ModelBiasCounters
from service.monitoring.store import ServedDecisions, ServedDecisionStore
from service.settings import ModelConfig

log = logging.getLogger(__name__)

STORE_ERRORS = (RedisError, OSError, TimeoutError)


@dataclass(frozen=True)
class FeedbackResult:
    """What one label did: the instance's model, and whether raw and fair were right."""

    request_id: str
    index: int
    model: str
    label: str
    raw_correct: bool
    fair_correct: bool


class BiasMonitor:
    def __init__(
        self, models: list[ModelConfig], metrics: BiasMetrics, store: ServedDecisionStore
    ) -> None:
        self.models = {m.name: m for m in models}
        self.counters = {m.name: ModelBiasCounters(metrics, m) for m in models}
        self.metrics = metrics
        self.store = store
        self.timeout_s = store.settings.store_timeout_s

    def columns(self, model: ModelConfig, monitor: list[dict[str, str]], n: int) -> GroupColumns:
        """Checked before the prediction runs, so a bad ``monitor`` costs no upstream call."""
        return group_columns(model, monitor, n)

    async def observe(
        self,
        model: ModelConfig,
        raw_log_probs: np.ndarray,
        fair_log_probs: np.ndarray,
        groups: GroupColumns,
    ) -> str | None:
        """Count the decisions and store them; the request id, or None if the store failed.

        A prediction never fails because of monitoring: the store gets ``store_timeout_s``,
        after which the answer goes out without a request id and the failure is counted.
        """
        raw = np.argmax(raw_log_probs, axis=1).tolist()
        fair = np.argmax(fair_log_probs, axis=1).tolist()
        self.counters[model.name].count_decisions(raw, fair, groups)
        record = ServedDecisions(model.name, raw, fair, {a: list(c) for a, c in groups.items()})
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self.store.put(record)
        except STORE_ERRORS as exc:
            self.metrics.store_errors.labels("put").inc()
            log.warning("served-decision store failed; answer has no request_id: %r", exc)
            return None

    async def feedback(self, request_id: str, index: int, label: str) -> FeedbackResult:
        """Count the true label of one served instance, once."""
        try:
            async with asyncio.timeout(self.timeout_s * 4):
                record = await self.store.get(request_id)
                model = self._model(record)
                true_label = self._check(record, model, index, label)
                if not await self.store.claim(request_id, index):
                    raise FeedbackAlreadyRecorded(
                        f"feedback for instance {index} of request {request_id} is already "
                        "recorded",
                        request_id=request_id,
                        index=index,
                    )
        except STORE_ERRORS as exc:
            self.metrics.store_errors.labels("feedback").inc()
            raise MonitoringStoreUnavailable(f"served-decision store failed: {exc!r}") from exc
        raw, fair = record.raw[index], record.fair[index]
        self.counters[model.name].count_feedback(raw, fair, record.groups_of(index), true_label)
        return FeedbackResult(
            request_id, index, model.name, label, raw == true_label, fair == true_label
        )

    def _model(self, record: ServedDecisions) -> ModelConfig:
        model = self.models.get(record.model)
        if model is None:  # served by a configuration that no longer has this model
            raise ModelNotFound(f"model '{record.model}' is no longer served")
        return model

    @staticmethod
    def _check(record: ServedDecisions, model: ModelConfig, index: int, label: str) -> int:
        if not 0 <= index < len(record.raw):
            raise InvalidFeedback(
                f"instance index {index} is out of range: the request had {len(record.raw)}"
            )
        if label not in model.classes:
            raise InvalidFeedback(
                f"label '{label}' is not a class of model '{model.name}'", classes=model.classes
            )
        return model.classes.index(label)
