"""One ONNX Runtime session per loaded patch version, with the checks that make it safe to serve.

A patch must take its declared input and answer ``log_bias`` [N, K] with log-normalised rows;
anything else is refused at load time (``PatchLoadError``) so it can never reach a request.

On the CUDA provider a session runs through I/O binding: the request's input is bound from host
memory (ONNX Runtime copies it to the device) and ``log_bias`` is allocated by ONNX Runtime on
the device and copied back once after the run, the path ONNX Runtime recommends for CUDA and the
one the GPU benchmark (bench/gpu.py) compares against raw ONNX Runtime. Which provider a patch
gets is decided in ``service.runtime.providers``.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import onnxruntime as ort

from service.errors import PatchFailed, PatchLoadError
from service.patch_contract import LOG_NORM_TOLERANCE, PATCH_OUTPUT
from service.runtime.providers import CUDA

log = logging.getLogger(__name__)


class PatchSession:
    """A loaded, validated patch. ``run`` is thread-safe (ORT sessions are) and releases the GIL."""

    def __init__(
        self,
        blob: bytes,
        *,
        input_name: str,
        input_shape: list[int],
        num_classes: int,
        providers: list[str],
        intra_op_threads: int = 1,
        label: str = "patch",
        io_binding: bool | None = None,
    ) -> None:
        """``io_binding``: None binds when the session's provider is CUDA; True or False forces
        it (ONNX Runtime's I/O binding works on the CPU provider too, which tests rely on)."""
        self.label = label
        self.input_name = input_name
        self.input_shape = list(input_shape)
        self.num_classes = num_classes
        self._session = self._create(blob, providers, intra_op_threads)
        self._cost_1 = self._cost_64 = float("inf")  # until warm() has timed it
        self.providers = self._session.get_providers()
        self.on_cuda = self.providers[0] == CUDA  # ORT falls back to CPU if CUDA fails to load
        self.uses_io_binding = self.on_cuda if io_binding is None else io_binding
        self._device = "cuda" if self.on_cuda else "cpu"
        self._check_signature()

    def _create(self, blob: bytes, providers: list[str], threads: int) -> ort.InferenceSession:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            return ort.InferenceSession(blob, sess_options=opts, providers=providers)
        except Exception as exc:  # ORT raises several unrelated types for a bad graph
            raise PatchLoadError(f"{self.label}: not a loadable ONNX model: {exc}") from None

    def _check_signature(self) -> None:
        inputs = {i.name for i in self._session.get_inputs()}
        outputs = {o.name for o in self._session.get_outputs()}
        if self.input_name not in inputs:
            raise PatchLoadError(
                f"{self.label}: no input '{self.input_name}' (has {sorted(inputs)})"
            )
        if PATCH_OUTPUT not in outputs:
            raise PatchLoadError(
                f"{self.label}: no output '{PATCH_OUTPUT}' (has {sorted(outputs)})"
            )

    def warm(self) -> None:
        """Prove shape and normalisation on a small batch, then time batches of 1 and 64."""
        x = np.random.default_rng(0).standard_normal((2, *self.input_shape)).astype(np.float32)
        try:
            out = self._infer(x)
        except Exception as exc:
            raise PatchLoadError(f"{self.label}: fails on a {list(x.shape)} batch: {exc}") from None
        if out.shape != (2, self.num_classes):
            raise PatchLoadError(
                f"{self.label}: log_bias has shape {list(out.shape)}, "
                f"model needs [N, {self.num_classes}]"
            )
        lse = np.log(np.exp(out.astype(np.float64)).sum(axis=1))
        if not np.all(np.abs(lse) < LOG_NORM_TOLERANCE):
            raise PatchLoadError(f"{self.label}: log_bias rows are not log-normalised")
        self._cost_1, self._cost_64 = (self._median_seconds(n) for n in (1, 64))

    def _median_seconds(self, n: int, repeats: int = 5) -> float:
        x = np.zeros((n, *self.input_shape), dtype=np.float32)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            self._infer(x)
            times.append(time.perf_counter() - start)
        return float(np.median(times))

    def estimated_seconds(self, n: int) -> float:
        """Inference time for a batch of ``n``, interpolated from the timings taken at warm-up.

        The data plane uses it to run cheap patches inline instead of paying a thread hop.
        """
        return self._cost_1 + (self._cost_64 - self._cost_1) * max(n - 1, 0) / 63

    def run(self, x: np.ndarray) -> np.ndarray:
        """log G(x) [N, K]; a runtime failure is a typed ``PatchFailed``, never a raw answer."""
        try:
            out = self._infer(x)
        except Exception as exc:
            raise PatchFailed(f"{self.label} failed at inference: {exc}") from None
        if out.shape != (len(x), self.num_classes) or not np.isfinite(out).all():
            raise PatchFailed(f"{self.label} produced a non-finite or mis-shaped log_bias")
        return out

    def _infer(self, x: np.ndarray) -> np.ndarray:
        if not self.uses_io_binding:
            return self._session.run([PATCH_OUTPUT], {self.input_name: x})[0]
        # One binding per call: ``run`` is called from several threads at once, and a binding
        # holds its call's buffers. ORT sizes the output ([N, K]) and allocates it on the device.
        binding = self._session.io_binding()
        binding.bind_cpu_input(self.input_name, np.ascontiguousarray(x))
        binding.bind_output(PATCH_OUTPUT, self._device)
        self._session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]
