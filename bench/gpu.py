"""The patch stage on a GPU (issue 17 §3): ``make bench-gpu``, docs/operations.md#gpu.

For the two image patch nets (the small CNN and ResNet-18, 3×32×32 inputs, 10 classes) it
measures, at batch 1, 32 and 256:

- the patch stage as the gateway runs it: a ``PatchSession`` on the provider the gateway's
  policy picks (``service.runtime.providers``), ``run(x)`` with its shape and finiteness checks,
  through I/O binding on CUDA;
- raw ONNX Runtime on the same provider with I/O binding (the input bound from host memory, the
  output on the device, copied back): the best a request can get from ONNX Runtime itself;
- their throughput ratio (rows per second, patch stage / raw), target ≥ 0.8;
- the fp16 export's parity with the fp32 export on the measuring provider (on CUDA the float16
  arithmetic is real; the training worker's gate ran on the CPU provider).

Two optional parts need more than ONNX Runtime and say "not measured" (with why) when their
pieces are missing: the end-to-end added latency of an image model (``bench.perf --only image``
measures it where the gateway's whole stack runs) and the GPU training time of the 100k-row job
(``bench.distill_scaling``, which needs PyTorch with CUDA, Redis and the stand-in black box).

Results go to ``bench/results/gpu.json`` only when the CUDA provider was measured; a CPU run
(no CUDA in the installed onnxruntime) records ``"provider": "CPUExecutionProvider"``, marks the
CUDA figures not measured and writes ``.cache/bench/gpu-cpu.json`` unless ``--out`` says where.

Two steps, because the GPU machine has ONNX Runtime but no PyTorch:

    python -m bench.gpu --prepare-only   # here: export the patches (PyTorch, onnx, the
                                         # fp16 converter) into .cache/gpu-bench/
    python -m bench.gpu                  # prepares if needed, then measures

On the lent GPU machine (Python 3.12; no package index reachable from it), through the
``device`` tool: the team's helper script splits the onnxruntime-gpu wheel into four parts,
``.ortgpu/ort.part00`` … ``ort.part03``, each small enough for one call's carry. Four calls each
carry one part and copy it to ``/tmp/ortgpu/`` (the machine stays warm between calls); the
fourth joins them with ``cat`` into the wheel's own file name and installs it with
``python3 -m pip install --no-index --no-deps --target /tmp/site <wheel>``. The prepared patches
travel the same way (``.cache/gpu-bench/resnet18.onnx`` alone is about 45 MB: one call for it,
one for the rest), copied to ``/tmp/gpu-bench/``. Then

    PYTHONPATH=/tmp/site:. python3 -m bench.gpu --patches /tmp/gpu-bench

``onnxruntime.preload_dlls()`` is called before any CUDA session is created (it loads the CUDA
and cuDNN libraries the wheel was built against); numpy must be importable there too. Copy the
written ``bench/results/gpu.json`` to ``$OUT`` to bring it back, and commit it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from service.patch_contract import PATCH_INPUT, PATCH_OUTPUT
from service.runtime.patch_session import PatchSession
from service.runtime.providers import CPU, CUDA, choose_providers

ROOT = Path(__file__).resolve().parents[1]
PATCHES = ROOT / ".cache" / "gpu-bench"
RESULTS = ROOT / "bench" / "results" / "gpu.json"
CPU_RESULTS = ROOT / ".cache" / "bench" / "gpu-cpu.json"
SHAPE = (3, 32, 32)
CLASSES = 10
NETS = ("cnn", "resnet18")
BATCHES = (1, 32, 256)
TARGET_RATIO = 0.8
MIN_INPUT_ELEMENTS = 256  # runtime.gpu_min_input_elements' default (a test keeps them equal)
FP16_ATOL = 0.02  # patch_training.export.fp16.FP16_ATOL, without importing PyTorch here
NOT_MEASURED = "not measured"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.split("\n")[0])
    p.add_argument("--patches", type=Path, default=PATCHES, help="prepared patches (folder)")
    p.add_argument("--prepare-only", action="store_true", help="export the patches and stop")
    p.add_argument("--nets", default=",".join(NETS), help="comma-separated: cnn, resnet18")
    p.add_argument("--batches", default=",".join(map(str, BATCHES)), help="batch sizes")
    p.add_argument("--repeats", type=int, default=50, help="timed runs per batch and round")
    p.add_argument("--rounds", type=int, default=3, help="alternating patch/raw rounds")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads (gateway default 1)")
    p.add_argument("--skip-training", action="store_true", help="do not try the 100k-row job")
    p.add_argument("--out", type=Path, default=None, help="result JSON (default: see above)")
    args = p.parse_args(argv)
    args.nets = [n for n in args.nets.split(",") if n]
    args.batches = [int(b) for b in args.batches.split(",") if b]
    if not set(args.nets) <= set(NETS) or not args.nets:
        p.error(f"--nets takes a subset of {','.join(NETS)}")
    if min(args.batches, default=0) < 1 or min(args.repeats, args.rounds) < 1:
        p.error("batch sizes, --repeats and --rounds must be positive")
    return args


# --- prepare: needs PyTorch, onnx and onnxconverter-common (the `train` extra) ---------------


def prepare(directory: Path, nets: Sequence[str]) -> dict[str, Any]:
    """Export each net (random weights, BatchNorm statistics moved by train-mode passes: speed
    does not depend on the values, parity does a little) in fp32 and fp16, with ``patches.json``
    naming the files and the fp16 parity on the CPU provider from the worker's own gate."""
    import torch

    from patch_training.export.fp16 import export_fp16
    from patch_training.export.torch_onnx import export_patch
    from patch_training.nets import build_patch_net, seed_everything

    directory.mkdir(parents=True, exist_ok=True)
    rows = np.random.default_rng(0).random((64, *SHAPE)).astype(np.float32)
    index: dict[str, Any] = {"input_shape": list(SHAPE), "classes": CLASSES, "nets": {}}
    for arch in nets:
        seed_everything(0)
        net = build_patch_net(SHAPE, CLASSES, rows, arch=arch, hidden=(64, 64))
        net.train()
        with torch.no_grad():
            for i in range(3):
                net(torch.from_numpy(rows[i * 16 : (i + 1) * 16]) * 2 - 0.5)
        blob = export_patch(net.eval(), SHAPE)
        half, diff = export_fp16(blob, rows)
        (directory / f"{arch}.onnx").write_bytes(blob)
        (directory / f"{arch}-fp16.onnx").write_bytes(half)
        index["nets"][arch] = {
            "net": type(net).__name__,
            "fp32": f"{arch}.onnx",
            "fp16": f"{arch}-fp16.onnx",
            "bytes": {"fp32": len(blob), "fp16": len(half)},
            "fp16_parity_cpu_max_abs_diff": diff,
        }
        print(f"prepared {arch}: {len(blob) / 1e6:.1f} MB fp32, fp16 parity {diff:.2g}")
    (directory / "patches.json").write_text(json.dumps(index, indent=2) + "\n")
    return index


def load_index(directory: Path, nets: Sequence[str]) -> dict[str, Any]:
    """The prepared patches, preparing them first when some are missing."""
    path = directory / "patches.json"
    index = json.loads(path.read_text()) if path.exists() else {"nets": {}}
    missing = [n for n in nets if n not in index["nets"]]
    if missing:
        index = prepare(directory, sorted(set(index["nets"]) | set(missing)))
    return index


# --- measure: ONNX Runtime and the gateway's runtime only ----------------------------------


class RawBound:
    """Raw ONNX Runtime with I/O binding: each call binds the request's host input, leaves the
    output on the provider's device and copies it back, on one reused binding."""

    def __init__(self, blob: bytes, providers: list[str], threads: int) -> None:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(blob, sess_options=opts, providers=providers)
        self.device = "cuda" if self.session.get_providers()[0] == CUDA else "cpu"
        self.binding = self.session.io_binding()

    def run(self, x: np.ndarray) -> np.ndarray:
        self.binding.bind_cpu_input(PATCH_INPUT, x)
        self.binding.bind_output(PATCH_OUTPUT, self.device)
        self.session.run_with_iobinding(self.binding)
        return self.binding.copy_outputs_to_cpu()[0]


def rows_per_second(fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray, repeats: int) -> float:
    fn(x)  # one untimed call: allocator and kernel choices for this batch size
    start = time.perf_counter()
    for _ in range(repeats):
        fn(x)
    return len(x) * repeats / (time.perf_counter() - start)


def compare(
    label: str,
    patch: PatchSession,
    raw: RawBound,
    batches: Sequence[int],
    repeats: int,
    rounds: int,
) -> dict[str, Any]:
    """Patch stage vs raw per batch size; rounds alternate the two so drift hits both."""
    out: dict[str, Any] = {}
    rng = np.random.default_rng(1)
    for n in batches:
        x = rng.random((n, *SHAPE)).astype(np.float32)
        np.testing.assert_allclose(patch.run(x), raw.run(x), atol=1e-4)  # the same answers
        ours, theirs = [], []
        for _ in range(rounds):
            ours.append(rows_per_second(patch.run, x, repeats))
            theirs.append(rows_per_second(raw.run, x, repeats))
        ratio = statistics.median(ours) / statistics.median(theirs)
        out[str(n)] = {
            "patch_stage_rows_per_s": round(statistics.median(ours), 1),
            "raw_ort_io_binding_rows_per_s": round(statistics.median(theirs), 1),
            "ratio": round(ratio, 3),
            "target": TARGET_RATIO,
            "target_met": ratio >= TARGET_RATIO,
            "rounds": {"patch_stage": ours, "raw": theirs},
        }
        mine, raw_rate = statistics.median(ours), statistics.median(theirs)
        print(
            f"  {label} batch {n:>4}: patch stage {mine:>10.1f} rows/s, "
            f"raw {raw_rate:>10.1f} rows/s, ratio {ratio:.3f}",
            flush=True,
        )
    return out


def session_for(blob: bytes, providers: list[str], threads: int) -> PatchSession:
    patch = PatchSession(
        blob,
        input_name=PATCH_INPUT,
        input_shape=list(SHAPE),
        num_classes=CLASSES,
        providers=providers,
        intra_op_threads=threads,
        label="bench",
    )
    patch.warm()
    return patch


def fp16_parity(fp32: PatchSession, fp16: PatchSession) -> dict[str, Any]:
    """Max |log G16 − log G32| on the measuring provider, on seeded rows."""
    x = np.random.default_rng(2).random((64, *SHAPE)).astype(np.float32)
    diff = float(np.abs(fp16.run(x) - fp32.run(x)).max())
    return {"max_abs_diff": diff, "atol": FP16_ATOL, "within": diff <= FP16_ATOL}


def measure(args: argparse.Namespace, index: dict[str, Any]) -> dict[str, Any]:
    cuda = CUDA in ort.get_available_providers()
    if cuda and hasattr(ort, "preload_dlls"):
        ort.preload_dlls()  # the CUDA and cuDNN libraries, before any CUDA session
    nets: dict[str, Any] = {}
    provider = None
    for arch in args.nets:
        entry = index["nets"][arch]
        providers = choose_providers(True, True, input_shape=SHAPE, min_elements=MIN_INPUT_ELEMENTS)
        blobs = {k: (args.patches / entry[k]).read_bytes() for k in ("fp32", "fp16")}
        patch = session_for(blobs["fp32"], providers, args.threads)
        provider = patch.providers[0]
        raw = RawBound(blobs["fp32"], providers, args.threads)
        print(f"{arch} on {provider} (I/O binding: {patch.uses_io_binding})", flush=True)
        half = session_for(blobs["fp16"], providers, args.threads)
        nets[arch] = {
            "net": entry["net"],
            "provider": provider,
            "patch_stage_io_binding": patch.uses_io_binding,
            "throughput": compare("fp32", patch, raw, args.batches, args.repeats, args.rounds),
            "fp16": {
                "bytes": entry["bytes"],
                "parity_cpu_at_export": entry["fp16_parity_cpu_max_abs_diff"],
                "parity_on_provider": fp16_parity(patch, half),
                "throughput": compare(
                    "fp16",
                    half,
                    RawBound(blobs["fp16"], providers, args.threads),
                    args.batches,
                    args.repeats,
                    args.rounds,
                ),
            },
        }
    on_cuda = provider == CUDA
    why_not = None
    if not on_cuda:
        why_not = (
            "onnxruntime lists the CUDA provider but the sessions fell back to the CPU provider "
            "(CUDA or cuDNN libraries not loaded)"
            if cuda
            else "no CUDA execution provider in this onnxruntime: CPU provider only"
        )
    return {
        "provider": provider or CPU,
        "cuda_measured": on_cuda,
        "cuda_not_measured_because": why_not,
        "patch_stage": nets,
        "targets_met": {
            arch: all(b["target_met"] for b in r["throughput"].values()) for arch, r in nets.items()
        },
        "e2e_added_latency_image": {
            "status": NOT_MEASURED,
            "why": "needs the gateway's whole stack (Redis, uvicorn, the stand-in black box) "
            "next to the GPU; `python -m bench.perf --only image` measures it where that runs",
        },
        "training_100k_rows_gpu": training_time(args, on_cuda),
        "meta": meta(args),
    }


def training_time(args: argparse.Namespace, on_cuda: bool) -> dict[str, Any]:
    """Wall time of the cold 100k-row Eraser job on CUDA, when its pieces are all here."""
    if args.skip_training:
        return {"status": NOT_MEASURED, "why": "--skip-training"}
    if importlib.util.find_spec("torch") is None:
        return {"status": NOT_MEASURED, "why": "PyTorch is not installed here"}
    import torch

    if not torch.cuda.is_available():
        return {"status": NOT_MEASURED, "why": "PyTorch has no CUDA device here"}
    try:
        from bench.distill_scaling import measure_distill_scaling

        seconds = measure_distill_scaling([100_000])[100_000]
    except Exception as exc:  # Redis, the stand-in or the job itself: say which
        return {"status": NOT_MEASURED, "why": f"the 100k-row job did not run: {exc}"[:500]}
    return {"status": "measured", "wall_s": seconds, "device": torch.cuda.get_device_name(0)}


def meta(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "onnxruntime": ort.__version__,
        "available_providers": ort.get_available_providers(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "nets": args.nets,
        "batches": args.batches,
        "repeats": args.repeats,
        "rounds": args.rounds,
        "intra_op_threads": args.threads,
        "input_shape": list(SHAPE),
        "argv": sys.argv[1:],
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any] | None:
    args = parse_args(argv)
    if args.prepare_only:
        prepare(args.patches, args.nets)
        return None
    result = measure(args, load_index(args.patches, args.nets))
    out = args.out or (RESULTS if result["cuda_measured"] else CPU_RESULTS)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
