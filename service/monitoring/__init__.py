"""Bias monitoring: protected attributes that callers report for monitoring only, counters of
raw and fair decisions per group, and label feedback (see DESIGN.md, "Metrics")."""
