"""An immutable, fully loaded patch stack, and the loader that builds one from the registry.

Requests take one reference to a ``LoadedStack`` and use only it, so a hot-swap never mixes two
revisions inside one answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from service.errors import PatchLoadError
from service.registry.models import PatchManifest, Stack
from service.registry.store import Registry
from service.runtime.patch_session import PatchSession
from service.runtime.providers import choose_providers
from service.settings import ModelConfig, RuntimeSettings


@dataclass(frozen=True)
class LoadedPatch:
    manifest: PatchManifest
    alpha: float
    session: PatchSession


@dataclass(frozen=True)
class LoadedStack:
    model: str
    revision: int
    patches: tuple[LoadedPatch, ...] = ()

    @property
    def debiasing(self) -> bool:
        return bool(self.patches)

    @property
    def alphas(self) -> list[float]:
        return [p.alpha for p in self.patches]

    def describe(self) -> list[dict[str, object]]:
        """What the response names: each patch, its version and its strength."""
        return [
            {"name": p.manifest.name, "version": p.manifest.version, "alpha": p.alpha}
            for p in self.patches
        ]

    def estimated_seconds(self, n: int) -> float:
        """The stack's inference time for a batch of ``n`` (linear fit from warm-up timings)."""
        one, per_extra_row = self._cost_model
        return one + per_extra_row * max(n - 1, 0)

    @cached_property
    def _cost_model(self) -> tuple[float, float]:
        """Asked on every request, so computed once per stack."""
        one = sum(p.session.estimated_seconds(1) for p in self.patches)
        return one, sum(p.session.estimated_seconds(2) for p in self.patches) - one

    def run(
        self, x: np.ndarray, on_patch: Callable[[LoadedPatch, float], None]
    ) -> list[np.ndarray]:
        """Every patch's log G(x), in stack order. Blocking: the data plane runs it on the loop
        only when ``estimated_seconds`` says it is cheaper than a thread hop. ``on_patch``
        receives each patch and its inference time in seconds (per-patch latency metrics)."""
        outputs = []
        for patch in self.patches:
            start = time.perf_counter()
            outputs.append(patch.session.run(x))
            on_patch(patch, time.perf_counter() - start)
        return outputs


class SessionCache:
    """One ORT session per (patch, version): versions are immutable, so sessions are reusable."""

    def __init__(self) -> None:
        self._sessions: dict[tuple[str, int], PatchSession] = {}

    def get(self, key: tuple[str, int]) -> PatchSession | None:
        return self._sessions.get(key)

    def put(self, key: tuple[str, int], session: PatchSession) -> None:
        self._sessions[key] = session

    def retain(self, keep: set[tuple[str, int]]) -> None:
        """Drop sessions no active stack uses (in-flight requests still hold their references)."""
        for key in set(self._sessions) - keep:
            del self._sessions[key]


def check_compatible(manifest: PatchManifest, model: ModelConfig) -> None:
    """A patch built for other classes or another input would silently skew every answer."""
    label = f"{manifest.name} v{manifest.version}"
    if manifest.model != model.name:
        raise PatchLoadError(f"{label} was built for model '{manifest.model}', not '{model.name}'")
    if manifest.classes != model.classes:
        raise PatchLoadError(f"{label} classes {manifest.classes} != model's {model.classes}")
    if manifest.input_shape != model.input.shape:
        raise PatchLoadError(
            f"{label} takes input {manifest.input_shape}, model sends {model.input.shape}"
        )


def build_session(
    manifest: PatchManifest, blob: bytes, model: ModelConfig, runtime: RuntimeSettings
) -> PatchSession:
    """Create, validate and warm a session for one patch version (blocking)."""
    check_compatible(manifest, model)
    session = PatchSession(
        blob,
        input_name=manifest.input_name,
        input_shape=manifest.input_shape,
        num_classes=model.num_classes,
        providers=choose_providers(
            runtime.use_gpu,
            manifest.allow_gpu,
            input_shape=manifest.input_shape,
            min_elements=runtime.gpu_min_input_elements,
        ),
        intra_op_threads=runtime.intra_op_threads,
        label=f"{manifest.name} v{manifest.version}",
    )
    session.warm()
    return session


class StackLoader:
    """Fetches, verifies and warms every patch of a registry ``Stack``."""

    def __init__(self, registry: Registry, runtime: RuntimeSettings, cache: SessionCache) -> None:
        self.registry = registry
        self.runtime = runtime
        self.cache = cache

    async def load(self, stack: Stack, model: ModelConfig, run_blocking) -> LoadedStack:
        """``run_blocking(fn, *args)`` runs session creation off the event loop. Refuses (with
        the registry's typed errors) an entry whose α is out of range or whose signed status is
        neither validated nor approved: the stack record alone does not decide what serves."""
        patches = []
        for entry in stack.entries:
            if not 0 <= entry.alpha <= self.runtime.max_alpha:
                raise PatchLoadError(
                    f"{entry.patch} v{entry.version}: α {entry.alpha:g} is outside the "
                    f"configured range [0, {self.runtime.max_alpha:g}]"
                )
            await self.registry.require_servable(entry.patch, entry.version)
            manifest = await self.registry.get_manifest(entry.patch, entry.version)
            key = (entry.patch, entry.version)
            session = self.cache.get(key)
            if session is None:
                blob = await self.registry.get_blob(manifest)
                session = await run_blocking(build_session, manifest, blob, model, self.runtime)
                self.cache.put(key, session)
            else:
                check_compatible(manifest, model)
            patches.append(LoadedPatch(manifest=manifest, alpha=entry.alpha, session=session))
        return LoadedStack(model=model.name, revision=stack.revision, patches=tuple(patches))
