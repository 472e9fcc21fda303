"""Eraser Gateway: inference-time debiasing in front of an unmodified black-box model."""

__version__ = "0.1.0"
