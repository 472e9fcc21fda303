"""``eraser-gateway``: run the gateway.

Training has its own command, ``eraser`` (``patch_training.cli``), so that the serving process
never imports training code.
"""

from __future__ import annotations

import copy
import logging
import os

import typer

# request_id: the X-Request-ID of the request the line belongs to ("-" outside one)
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"

app = typer.Typer(help="Eraser Gateway: inference-time debiasing in front of a black-box model.")


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="debug logging")) -> None:
    from service.request_context import RequestIdFilter

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format=LOG_FORMAT,
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(RequestIdFilter())


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="bind address"),
    port: int = typer.Option(8000, help="bind port"),
    workers: int = typer.Option(
        1, min=1, help="processes; one event loop each (about one per core)"
    ),
    grpc_port: int | None = typer.Option(
        None,
        min=0,
        max=65535,
        help="also serve OIP v2 over gRPC on this port (Triton's is 8001), on the same event "
        "loop; default: the grpc.port setting, unset: no gRPC",
    ),
) -> None:
    """Run the gateway (settings from ERASER_* variables and ERASER_CONFIG_FILE / eraser.yaml)."""
    import uvicorn

    _configure_grpc(host, grpc_port)

    uvicorn.run(
        "service.api.app:app_from_environment",
        log_config=_log_config(),
        factory=True,
        workers=workers,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
    )


def _configure_grpc(host: str, port: int | None) -> None:
    """Hand ``--grpc-port`` and, unless ``grpc.host`` is set, ``--host`` to the app factory of
    every worker through the environment (they are the settings ``ERASER_GRPC__PORT`` and
    ``ERASER_GRPC__HOST``; workers inherit it)."""
    from service.settings import GatewaySettings

    if port is not None:
        os.environ["ERASER_GRPC__PORT"] = str(port)
    settings = GatewaySettings()
    if settings.grpc.port is not None and settings.grpc.host is None:
        os.environ["ERASER_GRPC__HOST"] = host


def _log_config() -> dict:
    """uvicorn's logging, plus the gateway's own loggers (workers are fresh processes)."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["filters"] = {"request_id": {"()": "service.request_context.RequestIdFilter"}}
    config["formatters"]["gateway"] = {
        "()": "uvicorn.logging.DefaultFormatter",
        "fmt": "%(levelprefix)s %(name)s [%(request_id)s]: %(message)s",
    }
    config["handlers"]["gateway"] = {
        "formatter": "gateway",
        "class": "logging.StreamHandler",
        "stream": "ext://sys.stderr",
        "filters": ["request_id"],
    }
    config["loggers"]["service"] = {"handlers": ["gateway"], "level": "INFO", "propagate": False}
    return config


if __name__ == "__main__":
    app()
