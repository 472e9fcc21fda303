"""Deployed models stored as ONNX files, served by the stand-in black box next to the numpy MLP.

The quality benchmark trains its deployed models (tabular MLPs, image CNNs) with PyTorch and
exports them to ONNX; the black-box process then serves them with onnxruntime only, so it never
imports torch and starts in well under a second. A model is a directory entry of two files:

* ``<dir>/<name>.onnx``: one input named ``"x"``, float32 ``[N, *input_shape]`` with a dynamic
  batch axis; one output, float32 ``[N, K]`` logits;
* ``<dir>/<name>.json``: ``{"classes": [...], "input_shape": [...], "feature_names": [...]}``
  (``feature_names`` may be null, e.g. for images): the contract a client needs (column
  order, class names) that the ONNX graph does not carry.

Everything is checked when a model is loaded (and before ``write_onnx_model`` writes it), so a
broken export fails at export or server start with a ``OnnxModelError``, not at the first request.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import onnxruntime as ort

INPUT_NAME = "x"
MODEL_SUFFIX = ".onnx"
META_SUFFIX = ".json"
# The name becomes a file name and a URL path segment (/v2/models/{name}): keep it plain.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class OnnxModelError(ValueError):
    """A model directory entry that cannot be served (missing or malformed metadata, a graph
    whose input/output does not match it, a bad name); the message says which file and why."""


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name) or name.endswith(MODEL_SUFFIX):
        raise OnnxModelError(
            f"invalid model name {name!r}: use letters, digits, '_', '.', '-' "
            "(not starting with '.' or '-')"
        )
    return name


def _check_meta(
    classes: Sequence[str], input_shape: Sequence[int], feature_names: Sequence[str] | None
) -> tuple[list[str], tuple[int, ...], list[str] | None]:
    """Normalise and validate the metadata the JSON file (or a writer) supplies."""
    if isinstance(classes, str) or not isinstance(classes, Sequence) or len(classes) < 2:
        raise OnnxModelError(f"'classes' must be a list of at least 2 names, got {classes!r}")
    if not all(isinstance(c, str) and c for c in classes) or len(set(classes)) != len(classes):
        raise OnnxModelError(f"'classes' must be distinct non-empty strings, got {classes!r}")
    ok_shape = (
        isinstance(input_shape, Sequence)
        and len(input_shape) >= 1
        and all(type(d) is int and d > 0 for d in input_shape)
    )
    if not ok_shape:
        raise OnnxModelError(
            f"'input_shape' must be a non-empty list of positive ints (no batch axis), "
            f"got {input_shape!r}"
        )
    shape = tuple(int(d) for d in input_shape)
    names: list[str] | None = None
    if feature_names is not None:
        if isinstance(feature_names, str) or not isinstance(feature_names, Sequence):
            raise OnnxModelError(f"'feature_names' must be a list or null, got {feature_names!r}")
        names = list(feature_names)
        if not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
            raise OnnxModelError(f"'feature_names' must be distinct non-empty strings: {names!r}")
        if shape != (len(names),):
            raise OnnxModelError(
                f"{len(names)} feature_names need input_shape [{len(names)}], got {list(shape)}"
            )
    return list(classes), shape, names


def _session_options(threads: int) -> ort.SessionOptions:
    """One intra-op thread by default: the benchmark runs gateway, worker and black box on two
    cores, where a thread pool per process only adds contention. Spinning is off for the same
    reason: idle pool threads that spin steal CPU from the gateway."""
    if type(threads) is not int or threads < 1:
        raise OnnxModelError(f"threads must be a positive int, got {threads!r}")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3  # errors only: shape-inference warnings are noise here
    return opts


class OnnxModel:
    """An ONNX classifier with the interface the server uses on ``MlpWeights``: ``classes``,
    ``feature_names``, ``input_shape``, ``logits(x)`` and ``probabilities(x)``."""

    platform: ClassVar[str] = "onnxruntime"

    def __init__(
        self,
        model: bytes | str | Path,
        classes: Sequence[str],
        input_shape: Sequence[int],
        feature_names: Sequence[str] | None = None,
        threads: int = 1,
        source: str | None = None,
    ) -> None:
        """``model`` is the serialized graph or a path to it; ``source`` names it in errors."""
        where = source or (str(model) if isinstance(model, str | Path) else "<onnx bytes>")
        try:
            self.classes, self.input_shape, self.feature_names = _check_meta(
                classes, input_shape, feature_names
            )
        except OnnxModelError as exc:
            raise OnnxModelError(f"{where}: {exc}") from None
        self.source = where
        try:
            self._session = ort.InferenceSession(
                model if isinstance(model, bytes) else str(model),
                sess_options=_session_options(threads),
                providers=["CPUExecutionProvider"],
            )
        except OnnxModelError:
            raise
        except Exception as exc:  # onnxruntime raises its own (untyped-ish) exceptions
            raise OnnxModelError(f"{where}: onnxruntime cannot load the model: {exc}") from None
        self._check_graph()

    def _check_graph(self) -> None:
        """The graph must match the metadata: one float input ``x`` of rank 1 + len(input_shape)
        with a dynamic batch axis, one float output; a two-row dry run confirms [2, K] logits."""
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1 or inputs[0].name != INPUT_NAME:
            names = [i.name for i in inputs]
            raise OnnxModelError(f"{self.source}: expected one input named 'x', got {names}")
        if len(outputs) != 1:
            names = [o.name for o in outputs]
            raise OnnxModelError(f"{self.source}: expected one output (logits), got {names}")
        x, y = inputs[0], outputs[0]
        if x.type != "tensor(float)" or y.type != "tensor(float)":
            raise OnnxModelError(
                f"{self.source}: input and output must be float32, got {x.type} -> {y.type}"
            )
        want = [-1, *self.input_shape]
        got = list(x.shape)
        if len(got) != len(want) or any(
            isinstance(g, int) and g != w for g, w in zip(got[1:], want[1:], strict=True)
        ):
            raise OnnxModelError(
                f"{self.source}: graph input shape {got} does not match input_shape "
                f"{list(self.input_shape)} (expected [N, {', '.join(map(str, want[1:]))}])"
            )
        if isinstance(got[0], int) and got[0] > 0:
            raise OnnxModelError(
                f"{self.source}: the batch axis is fixed to {got[0]}; export it as dynamic"
            )
        try:
            out = self._run(np.zeros((2, *self.input_shape), dtype=np.float32))
        except Exception as exc:
            raise OnnxModelError(f"{self.source}: dry run on zeros failed: {exc}") from None
        if out.shape != (2, len(self.classes)):
            raise OnnxModelError(
                f"{self.source}: output shape {list(out.shape)} for 2 rows does not match "
                f"[2, {len(self.classes)}] ({len(self.classes)} classes)"
            )

    @classmethod
    def load(cls, directory: str | Path, name: str, threads: int = 1) -> OnnxModel:
        """Load ``<directory>/<name>.onnx`` with its ``<name>.json`` metadata."""
        directory = Path(directory)
        _check_name(name)
        onnx_path = directory / f"{name}{MODEL_SUFFIX}"
        meta_path = directory / f"{name}{META_SUFFIX}"
        if not onnx_path.is_file():
            raise OnnxModelError(f"{onnx_path}: model file not found")
        if not meta_path.is_file():
            raise OnnxModelError(
                f"{meta_path}: metadata file missing; every <name>.onnx needs a <name>.json with "
                "'classes', 'input_shape' and 'feature_names'"
            )
        try:
            meta: Any = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise OnnxModelError(f"{meta_path}: unreadable JSON: {exc}") from None
        if not isinstance(meta, dict) or not {"classes", "input_shape"} <= meta.keys():
            raise OnnxModelError(f"{meta_path}: must be an object with 'classes', 'input_shape'")
        try:
            _check_meta(meta["classes"], meta["input_shape"], meta.get("feature_names"))
        except OnnxModelError as exc:
            raise OnnxModelError(f"{meta_path}: {exc}") from None
        return cls(
            onnx_path,
            classes=meta["classes"],
            input_shape=meta["input_shape"],
            feature_names=meta.get("feature_names"),
            threads=threads,
            source=str(onnx_path),
        )

    def _run(self, x: np.ndarray) -> np.ndarray:
        out = self._session.run(None, {INPUT_NAME: x})[0]
        return np.asarray(out, dtype=np.float32)

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Logits [N, K] float32 for ``x`` of shape [N, *input_shape]."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.shape[1:] != self.input_shape:
            raise ValueError(
                f"x must have shape [N, {', '.join(map(str, self.input_shape))}], "
                f"got {list(x.shape)}"
            )
        if x.shape[0] == 0:  # some kernels reject empty batches; the answer is known anyway
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        return self._run(x)

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """Softmax of ``logits``, [N, K] float32 (numerically stable form)."""
        z = self.logits(x)
        z = z - z.max(axis=1, keepdims=True) if z.shape[0] else z
        e = np.exp(z)
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)

    def __repr__(self) -> str:
        return (
            f"OnnxModel({self.source!r}, classes={self.classes!r}, "
            f"input_shape={self.input_shape!r})"
        )


def _atomic_write(path: Path, data: bytes) -> None:
    """Write via a hidden temp file in the same directory and ``os.replace``, so a server
    starting concurrently never reads half a file (and ``*.onnx`` globs never see the temp)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; other users/containers must read the model
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_onnx_model(
    directory: str | Path,
    name: str,
    onnx_bytes: bytes,
    classes: Sequence[str],
    input_shape: Sequence[int],
    feature_names: Sequence[str] | None = None,
) -> Path:
    """Validate then write ``<directory>/<name>.onnx`` and ``<name>.json``; returns the .onnx path.

    The model is loaded once before anything is written, so a bad export fails here, in the
    benchmark that made it, not when the server starts. The JSON goes first: loaders key on
    ``*.onnx``, so whenever a new model's graph is visible its metadata already is.
    """
    _check_name(name)
    if not isinstance(onnx_bytes, bytes | bytearray | memoryview):
        raise OnnxModelError(f"onnx_bytes must be bytes, got {type(onnx_bytes).__name__}")
    blob = bytes(onnx_bytes)
    model = OnnxModel(blob, classes, input_shape, feature_names, source=f"model {name!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta = {
        "classes": model.classes,
        "input_shape": list(model.input_shape),
        "feature_names": model.feature_names,
    }
    _atomic_write(directory / f"{name}{META_SUFFIX}", json.dumps(meta, indent=2).encode() + b"\n")
    onnx_path = directory / f"{name}{MODEL_SUFFIX}"
    _atomic_write(onnx_path, blob)
    return onnx_path


def load_model_dir(directory: str | Path, threads: int = 1) -> dict[str, OnnxModel]:
    """Every ``<name>.onnx`` of ``directory`` (with its ``<name>.json``), keyed by name, sorted.

    An empty directory gives ``{}`` (the caller decides whether that is an error); a missing
    directory or any unloadable entry raises ``OnnxModelError``: serving a partial set of models
    would let a benchmark silently skip one.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise OnnxModelError(f"models directory {directory} does not exist or is not a directory")
    models: dict[str, OnnxModel] = {}
    for path in sorted(directory.glob(f"*{MODEL_SUFFIX}")):
        if path.name.startswith("."):
            continue
        models[path.stem] = OnnxModel.load(directory, path.stem, threads=threads)
    return models
