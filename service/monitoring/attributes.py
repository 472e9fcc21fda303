"""The ``monitor`` field of a request: per instance, the protected attributes a caller reports
for monitoring only. They are checked here and turned into one column per attribute; they never
reach the upstream or a patch (the data plane is not given them)."""

from __future__ import annotations

from service.errors import InvalidMonitoring
from service.monitoring.bias_metrics import GroupColumns
from service.settings import ModelConfig


def group_columns(model: ModelConfig, monitor: list[dict[str, str]], n: int) -> GroupColumns:
    """Per declared attribute, each instance's group (None where an instance does not say).

    Undeclared attributes or groups are refused rather than dropped: a typo would otherwise
    silently leave a group out of the fairness metrics, and declared values bound the series
    that callers can create in Prometheus.
    """
    attributes = model.monitoring.attributes
    if not attributes:
        raise InvalidMonitoring(f"model '{model.name}' has no monitored attributes")
    if len(monitor) != n:
        raise InvalidMonitoring(f"monitor has {len(monitor)} entries for {n} instances")
    columns: dict[str, list[str | None]] = {}
    for i, row in enumerate(monitor):
        for attr, group in row.items():
            spec = attributes.get(attr)
            if spec is None:
                raise InvalidMonitoring(
                    f"monitor[{i}]: attribute '{attr}' is not monitored for model '{model.name}'",
                    monitored=sorted(attributes),
                )
            if group not in spec.groups:
                raise InvalidMonitoring(
                    f"monitor[{i}].{attr}: group '{group}' is not declared", groups=spec.groups
                )
            columns.setdefault(attr, [None] * n)[i] = group
    return columns
