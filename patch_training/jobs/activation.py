"""Activate validated patches: put them on the model's stack by compare-and-set.

The new stack is the current one with any earlier version of the same patches replaced, so
training a new ``compas-race`` never stacks it on top of the old one. A concurrent change by an
operator is not overwritten: on a revision conflict the stack is re-read and the edit redone.
"""

from __future__ import annotations

from service.errors import StackConflict
from service.registry.models import Stack, StackEntry
from service.registry.store import Registry

ATTEMPTS = 5


async def activate(registry: Registry, model: str, entries: list[StackEntry], reason: str) -> Stack:
    """Replace-or-append ``entries`` on the active stack; StackConflict after ``ATTEMPTS``."""
    names = {e.patch for e in entries}
    for attempt in range(ATTEMPTS):
        current = await registry.get_stack(model)
        kept = [e for e in current.entries if e.patch not in names]
        try:
            return await registry.set_stack(model, kept + entries, current.revision, reason)
        except StackConflict:
            if attempt == ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")
