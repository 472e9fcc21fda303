"""CLI of the stand-in black box: ``python -m blackbox train|serve``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(add_completion=False, help="Stand-in black-box model (OIP v2) for the gateway.")

DEFAULT_PATH = Path(".cache/models/compas_mlp.npz")


@app.command()
def train(
    out: Annotated[Path, typer.Option(help="where to write the .npz")] = DEFAULT_PATH,
    seed: Annotated[int, typer.Option(help="split and init seed")] = 0,
) -> None:
    """Train the COMPAS MLP (no race input) and save its weights."""
    from blackbox.model import train_compas_mlp

    path = train_compas_mlp(seed=seed).save(out)
    typer.echo(f"saved {path}")


@app.command()
def serve(
    port: Annotated[int, typer.Option()] = 9001,
    host: Annotated[str, typer.Option(help="0.0.0.0 inside a container")] = "127.0.0.1",
    model_path: Annotated[Path, typer.Option(help="trained here first if missing")] = DEFAULT_PATH,
    name: Annotated[str, typer.Option(help="OIP model name")] = "compas",
    delay_ms: Annotated[float, typer.Option(help="artificial latency per request")] = 0.0,
    seed: Annotated[int, typer.Option(help="seed if the model must be trained")] = 0,
    race_input: Annotated[
        bool, typer.Option(help="if trained here: race as an eighth input (the paper's setting)")
    ] = False,
) -> None:
    """Serve the model over Open Inference Protocol v2."""
    from blackbox.server import serve as run_server

    run_server(
        model_path,
        host=host,
        port=port,
        name=name,
        delay_ms=delay_ms,
        seed=seed,
        race_input=race_input,
    )


if __name__ == "__main__":
    app()
