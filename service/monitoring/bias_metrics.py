"""Bias counters per model, protected attribute, group and stage, and the code that bumps them.

Counters, not per-process gauges of rates: Prometheus sums counters across replicas, and the
recording rules in ``deploy/prometheus/`` turn sums of rates into statistical parity, disparate
impact, equalized odds and worst-group accuracy for the raw (upstream alone) and the fair
(served) stage. Every series is created at zero when the gateway starts (groups are declared in
the settings), so ``rate()`` sees a request's decisions even if it came before the first scrape
and all series of a scrape share the same extrapolation, which keeps the rules' ratios exact.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Mapping, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge

from service.settings import ModelConfig

STAGES = ("raw", "fair")

# Per attribute, the group of each instance in a request (None: not reported for that one).
GroupColumns = Mapping[str, Sequence[str | None]]


class BiasMetrics:
    """The bias metric families, on the gateway's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.decisions = Counter(
            "eraser_bias_decisions",
            "Monitored decisions by group, stage (raw|fair) and predicted class",
            ["model", "attribute", "group", "stage", "label"],
            registry=registry,
        )
        self.positive = Counter(
            "eraser_bias_positive_decisions",
            "Monitored decisions equal to the model's positive class",
            ["model", "attribute", "group", "stage"],
            registry=registry,
        )
        self.feedback = Counter(
            "eraser_bias_feedback",
            "Labelled monitored decisions by true label, group, stage and correctness",
            ["model", "attribute", "group", "stage", "true_label", "correct"],
            registry=registry,
        )
        self.privileged = Gauge(
            "eraser_bias_privileged_group_info",
            "1 for each attribute's reference group (signed SPD / DIR)",
            ["model", "attribute", "group"],
            registry=registry,
        )
        self.positive_class = Gauge(
            "eraser_bias_positive_class_info",
            "1 for the class counted as a positive decision",
            ["model", "label"],
            registry=registry,
        )
        self.store_errors = Counter(
            "eraser_monitoring_store_errors",
            "Served-decision store calls that failed (monitored answers then lack request_id)",
            ["operation"],
            registry=registry,
        )
        for operation in ("put", "feedback"):
            self.store_errors.labels(operation)  # at zero from the start, like every series here


class ModelBiasCounters:
    """One model's counter children, created (at zero) once; the hot path only looks them up."""

    def __init__(self, metrics: BiasMetrics, model: ModelConfig) -> None:
        self.model = model
        self.attributes = model.monitoring.attributes
        self.positive = model.positive_class
        classes = model.classes
        name = model.name
        metrics.positive_class.labels(name, classes[self.positive]).set(1)
        self._decisions = {}
        self._positive = {}
        self._feedback = {}
        for attr, spec in self.attributes.items():
            if spec.privileged is not None:
                metrics.privileged.labels(name, attr, spec.privileged).set(1)
            for group in spec.groups:
                for stage in STAGES:
                    self._positive[attr, group, stage] = metrics.positive.labels(
                        name, attr, group, stage
                    )
                    for k, label in enumerate(classes):
                        self._decisions[attr, group, stage, k] = metrics.decisions.labels(
                            name, attr, group, stage, label
                        )
                        for correct in (True, False):
                            self._feedback[attr, group, stage, k, correct] = (
                                metrics.feedback.labels(
                                    name, attr, group, stage, label, str(correct).lower()
                                )
                            )

    def count_decisions(
        self, raw: Sequence[int], fair: Sequence[int], groups: GroupColumns
    ) -> None:
        """Count a request's raw and fair decisions once per reported attribute.

        Tallied first, so a batch costs one increment per distinct (group, class), not per row.
        """
        for attr, column in groups.items():
            for stage, labels in (("raw", raw), ("fair", fair)):
                for (group, label), n in Tally(zip(column, labels, strict=True)).items():
                    if group is None:
                        continue
                    self._decisions[attr, group, stage, label].inc(n)
                    if label == self.positive:
                        self._positive[attr, group, stage].inc(n)

    def count_feedback(
        self, raw: int, fair: int, groups: Mapping[str, str | None], true_label: int
    ) -> None:
        """Count one labelled instance under every attribute it was reported with."""
        for attr, group in groups.items():
            if group is None or attr not in self.attributes:
                continue  # an attribute dropped from the settings since the answer was served
            if group not in self.attributes[attr].groups:
                continue
            for stage, label in (("raw", raw), ("fair", fair)):
                self._feedback[attr, group, stage, true_label, label == true_label].inc()
