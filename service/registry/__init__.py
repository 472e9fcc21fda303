"""Patch registry: signed, content-addressed patch versions and compare-and-set stacks in Redis."""

from service.registry.keys import RegistryKeys
from service.registry.models import (
    NAME_PATTERN,
    REJECTED,
    VALIDATED,
    PatchKind,
    PatchManifest,
    PatchReport,
    PatchSpec,
    Stack,
    StackEntry,
    StackEvent,
    VersionStatus,
)
from service.registry.store import HISTORY_LENGTH, Registry

__all__ = [
    "HISTORY_LENGTH",
    "NAME_PATTERN",
    "REJECTED",
    "VALIDATED",
    "PatchKind",
    "PatchManifest",
    "PatchReport",
    "PatchSpec",
    "Registry",
    "RegistryKeys",
    "Stack",
    "StackEntry",
    "StackEvent",
    "VersionStatus",
]
