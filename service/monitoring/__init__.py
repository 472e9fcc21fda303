"""Bias monitoring: protected attributes that callers report for monitoring only, counters of
raw and fair decisions per group, and label feedback (docs/design.md, "Metrics")."""
