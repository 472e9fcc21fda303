"""The gateway's collaborators, built once by the lifespan and handed to routes as typed
dependencies.

Routes declare what they use (``plane: DataplaneDep``); this module is the only place that reads
``app.state``. Each accessor is a plain ``async def`` (FastAPI runs sync dependencies in a
thread pool, a ~0.1 ms hop on the hot path).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, FastAPI, Request

from service.calibration.checker import UploadChecker
from service.calibration.store import CalibrationStore
from service.dataplane import Dataplane
from service.jobs.audits import AuditStore
from service.jobs.queue import JobQueue
from service.monitoring.monitor import BiasMonitor
from service.registry.store import Registry
from service.runtime.hotload import RunBlocking, StackWatcher
from service.settings import GatewaySettings


@dataclass(frozen=True)
class Gateway:
    """Everything a running gateway holds; ``service.api.app`` builds and closes it."""

    settings: GatewaySettings
    registry: Registry
    dataplane: Dataplane
    watcher: StackWatcher
    monitor: BiasMonitor
    calibrations: CalibrationStore
    uploads: UploadChecker
    jobs: JobQueue
    audits: AuditStore
    load_blocking: RunBlocking  # session builds and warm-ups, off the inference pool


def install(app: FastAPI, gateway: Gateway) -> None:
    app.state.gateway = gateway


def settings_of(app: FastAPI) -> GatewaySettings:
    """Settings exist before the lifespan starts (the edge middleware needs them)."""
    return app.state.settings


def dataplane_of(app: FastAPI) -> Dataplane:
    """The running data plane (for ``service.api.fastlane``, which runs no dependencies)."""
    return app.state.gateway.dataplane


async def _gateway(request: Request) -> Gateway:
    return request.app.state.gateway


async def _dataplane(request: Request) -> Dataplane:
    return request.app.state.gateway.dataplane


async def _registry(request: Request) -> Registry:
    return request.app.state.gateway.registry


async def _monitor(request: Request) -> BiasMonitor:
    return request.app.state.gateway.monitor


GatewayDep = Annotated[Gateway, Depends(_gateway)]
DataplaneDep = Annotated[Dataplane, Depends(_dataplane)]
RegistryDep = Annotated[Registry, Depends(_registry)]
MonitorDep = Annotated[BiasMonitor, Depends(_monitor)]
