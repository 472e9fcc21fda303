"""Patch-training methods, one module each, behind the interface of ``methods.base``.

``METHODS`` maps a job spec's ``method`` (``service.jobs.spec.Method``) to its implementation;
the CLI and the queue worker dispatch through it.
"""

from __future__ import annotations

from patch_training.methods.base import Method
from patch_training.methods.eraser import Eraser

METHODS: dict[str, Method] = {"eraser": Eraser()}
