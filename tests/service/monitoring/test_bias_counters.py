"""Bias counters: series exist at zero from the start, decisions and labels land per group."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from service.errors import InvalidMonitoring
from service.monitoring.attributes import group_columns
from service.monitoring.bias_metrics import BiasMetrics, ModelBiasCounters
from service.settings import ModelConfig
from tests.service.monitoring.conftest import MONITORING, RACES, model_config

MODEL = ModelConfig.model_validate(
    model_config("http://127.0.0.1:1") | {"monitoring": MONITORING}
)  # classes [no_recid, recid]; positive: no_recid (index 0)


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, {"model": "compas", **labels})


def counters() -> tuple[CollectorRegistry, ModelBiasCounters]:
    registry = CollectorRegistry()
    return registry, ModelBiasCounters(BiasMetrics(registry), MODEL)


def test_every_declared_series_exists_at_zero_before_any_request() -> None:
    registry, _ = counters()
    for race in RACES:
        for stage in ("raw", "fair"):
            for label in ("no_recid", "recid"):
                labels = {"attribute": "race", "group": race, "stage": stage, "label": label}
                assert sample(registry, "eraser_bias_decisions_total", **labels) == 0.0
                for correct in ("true", "false"):
                    fb = labels | {"correct": correct}
                    fb["true_label"] = fb.pop("label")
                    assert sample(registry, "eraser_bias_feedback_total", **fb) == 0.0
    info = {"attribute": "race", "group": "Caucasian"}
    assert sample(registry, "eraser_bias_privileged_group_info", **info) == 1.0
    assert sample(registry, "eraser_bias_positive_class_info", label="no_recid") == 1.0
    assert (
        sample(registry, "eraser_bias_privileged_group_info", attribute="sex", group="Male") is None
    )


def test_decisions_are_counted_per_group_stage_and_class_and_positives_separately() -> None:
    registry, c = counters()
    raw, fair = [1, 1, 0, 1], [0, 1, 0, 0]
    groups = {"race": ["Caucasian", "Caucasian", "Hispanic", None], "sex": ["Male"] * 4}
    c.count_decisions(raw, fair, groups)

    def decisions(attr: str, group: str, stage: str, label: str) -> float | None:
        labels = {"attribute": attr, "group": group, "stage": stage, "label": label}
        return sample(registry, "eraser_bias_decisions_total", **labels)

    assert decisions("race", "Caucasian", "raw", "recid") == 2
    assert decisions("race", "Caucasian", "fair", "recid") == 1
    assert decisions("race", "Caucasian", "fair", "no_recid") == 1
    assert decisions("race", "Hispanic", "raw", "no_recid") == 1
    assert decisions("race", "Other", "raw", "recid") == 0  # the unreported row counts nowhere
    assert decisions("sex", "Male", "fair", "no_recid") == 3
    positive = {"attribute": "sex", "group": "Male"}
    assert sample(registry, "eraser_bias_positive_decisions_total", **positive, stage="raw") == 1
    assert sample(registry, "eraser_bias_positive_decisions_total", **positive, stage="fair") == 3


def test_feedback_is_counted_per_true_label_and_correctness_for_each_stage() -> None:
    registry, c = counters()
    c.count_feedback(raw=1, fair=0, groups={"race": "Other", "sex": None}, true_label=0)
    base = {"attribute": "race", "group": "Other", "true_label": "no_recid"}
    assert sample(registry, "eraser_bias_feedback_total", **base, stage="raw", correct="false") == 1
    assert sample(registry, "eraser_bias_feedback_total", **base, stage="fair", correct="true") == 1
    assert (
        sample(registry, "eraser_bias_feedback_total", **base, stage="fair", correct="false") == 0
    )
    sex = {"attribute": "sex", "group": "Male", "true_label": "no_recid", "correct": "true"}
    assert sample(registry, "eraser_bias_feedback_total", **sex, stage="fair") == 0


@pytest.mark.parametrize(
    ("monitor", "message"),
    [
        ([{"race": "Caucasian"}], "1 entries for 2 instances"),
        ([{"religion": "x"}, {}], "attribute 'religion' is not monitored"),
        ([{}, {"race": "caucasian"}], "monitor[1].race: group 'caucasian' is not declared"),
    ],
)
def test_undeclared_attributes_groups_or_a_wrong_count_are_refused(
    monitor: list[dict[str, str]], message: str
) -> None:
    with pytest.raises(InvalidMonitoring, match=message.replace("[", r"\[").replace("]", r"\]")):
        group_columns(MODEL, monitor, n=2)


def test_a_model_without_monitored_attributes_refuses_a_monitor_field() -> None:
    plain = ModelConfig.model_validate(model_config("http://127.0.0.1:1"))
    with pytest.raises(InvalidMonitoring, match="no monitored attributes"):
        group_columns(plain, [{"race": "Caucasian"}], n=1)


def test_columns_hold_each_instances_group_and_none_where_it_is_not_reported() -> None:
    columns = group_columns(MODEL, [{"race": "Other"}, {"sex": "Female", "race": "Hispanic"}], 2)
    assert columns == {"race": ["Other", "Hispanic"], "sex": [None, "Female"]}


def test_a_positive_class_that_is_not_a_class_is_a_settings_error() -> None:
    bad = model_config("http://127.0.0.1:1") | {"monitoring": {"positive_class": "yes"}}
    with pytest.raises(ValueError, match="positive_class 'yes' is not in"):
        ModelConfig.model_validate(bad)
