"""CLI of the stand-in black box: ``python -m blackbox train|serve|serve-dir``."""

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


@app.command("serve-dir")
def serve_dir(
    models_dir: Annotated[Path, typer.Option(help="directory of <name>.onnx + <name>.json models")],
    port: Annotated[int, typer.Option()] = 9001,
    host: Annotated[str, typer.Option(help="0.0.0.0 inside a container")] = "127.0.0.1",
    threads: Annotated[int, typer.Option(min=1, help="onnxruntime intra-op threads per model")] = 1,
    delay_ms: Annotated[float, typer.Option(help="artificial latency per request")] = 0.0,
    grpc_port: Annotated[
        int | None, typer.Option(help="also serve OIP v2 over gRPC on this port (ModelInfer)")
    ] = None,
) -> None:
    """Serve every ONNX model of a directory over OIP v2, each at /v2/models/{name}.

    Fails before binding the port when the directory is missing, empty or holds a model that
    cannot be loaded, so a benchmark never runs against a partial set of models.
    """
    from blackbox.onnx_model import MODEL_SUFFIX, OnnxModelError, load_model_dir
    from blackbox.server import serve_models

    try:
        models = load_model_dir(models_dir, threads=threads)
    except OnnxModelError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    if not models:
        typer.echo(
            f"error: no models in {models_dir}: expected <name>{MODEL_SUFFIX} files, "
            "each with a <name>.json",
            err=True,
        )
        raise typer.Exit(1)
    typer.echo(f"serving {', '.join(models)} on http://{host}:{port}", err=True)
    serve_models(models, host=host, port=port, delay_ms=delay_ms, grpc_port=grpc_port)


if __name__ == "__main__":
    app()
