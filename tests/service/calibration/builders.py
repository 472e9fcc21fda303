"""In-memory calibration uploads in every accepted format, and the models they are for."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from blackbox.data import FEATURE_NAMES
from deploy.local.processes import standin_model_config
from service.settings import ModelConfig

TARGET = "two_year_recid"
BIAS = "race"
RACES = ("African-American", "Caucasian")


def tabular_model() -> ModelConfig:
    """The COMPAS stand-in's model entry: seven named features, classes no_recid/recid."""
    return ModelConfig.model_validate(standin_model_config("http://127.0.0.1:9"))


def image_model(channels: int = 3) -> ModelConfig:
    return ModelConfig(
        name="shapes",
        classes=["circle", "square", "triangle"],
        input={"shape": [channels, 8, 8]},
        upstream={"url": "http://127.0.0.1:9/v2/models/shapes/infer"},
    )


def compas_columns(rows: int = 6) -> dict[str, list[object]]:
    """Feature columns in model order, then race and the target (as class indices)."""
    i = np.arange(rows)
    columns: dict[str, list[object]] = {
        name: (i * (k + 1) + 20 * (k == 0)).tolist() for k, name in enumerate(FEATURE_NAMES)
    }
    columns[BIAS] = [RACES[j % 2] for j in range(rows)]
    columns[TARGET] = [(j // 2) % 2 for j in range(rows)]
    return columns


def feature_matrix(columns: dict[str, list[object]]) -> np.ndarray:
    """What ``x`` must be: the features in the model's order, whatever the file's order."""
    return np.array([columns[f] for f in FEATURE_NAMES], dtype=np.float32).T


def csv_bytes(columns: dict[str, list[object]]) -> bytes:
    """Cells are written with ``str``; None becomes an empty cell."""
    header = ",".join(columns)
    rows = zip(*columns.values(), strict=True)
    lines = [",".join("" if v is None else str(v) for v in row) for row in rows]
    return ("\n".join([header, *lines]) + "\n").encode()


def parquet_bytes(columns: dict[str, list[object]]) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.table(columns), sink)
    return sink.getvalue()


def npz_bytes(**arrays: np.ndarray) -> bytes:
    sink = io.BytesIO()
    np.savez(sink, **arrays)
    return sink.getvalue()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    sink = io.BytesIO()
    with zipfile.ZipFile(sink, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return sink.getvalue()


def png_bytes(pixels: np.ndarray) -> bytes:
    """``pixels``: uint8 [H, W, 3] (RGB) or [H, W] (grey)."""
    sink = io.BytesIO()
    Image.fromarray(pixels).save(sink, format="PNG")
    return sink.getvalue()
