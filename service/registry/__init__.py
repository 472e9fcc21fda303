"""Patch registry: signed, content-addressed patch versions and compare-and-set stacks in Redis."""

from service.registry.keys import RegistryKeys
from service.registry.models import (
    NAME_PATTERN,
    PatchKind,
    PatchManifest,
    PatchSpec,
    Stack,
    StackEntry,
    StackEvent,
)
from service.registry.store import HISTORY_LENGTH, Registry

__all__ = [
    "HISTORY_LENGTH",
    "NAME_PATTERN",
    "PatchKind",
    "PatchManifest",
    "PatchSpec",
    "Registry",
    "RegistryKeys",
    "Stack",
    "StackEntry",
    "StackEvent",
]
