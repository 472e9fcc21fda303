"""Patch-training methods, one module each, behind the interface of ``methods.base``.

``METHODS`` maps a job spec's ``method`` (``service.jobs.spec.Method``) to its implementation;
the CLI and the queue worker dispatch through it.
"""

from __future__ import annotations

from patch_training.methods.base import Method
from patch_training.methods.eraser import Eraser
from patch_training.methods.fmd import Fmd
from patch_training.methods.poisoner import Poisoner

METHODS: dict[str, Method] = {"eraser": Eraser(), "poisoner": Poisoner(), "fmd": Fmd()}
"""``poisoner`` (label-free) builds two candidate patches from one f_B training — its own kind
and ``poisoner-eraser`` — and the job keeps the one its gate prefers
(``patch_training.jobs.label_free``). ``fmd`` needs every row's counterfactuals and the black
box's answers on them (``MethodInput.counterfactual``); its job builds them
(``patch_training.jobs.fmd``)."""
