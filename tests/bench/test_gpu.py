"""bench/gpu.py (``make bench-gpu``) on the CPU provider, with tiny batch counts; its CUDA run is
a separate test that skips, saying why, where onnxruntime has no CUDA provider."""

from __future__ import annotations

import json
from pathlib import Path

import onnxruntime as ort
import pytest

pytest.importorskip("torch")  # preparing the patches exports them from PyTorch

from bench import gpu
from service.runtime.providers import CPU, CUDA
from service.settings import RuntimeSettings

HAS_CUDA = CUDA in ort.get_available_providers()
TINY = ["--nets", "cnn", "--batches", "1,3", "--repeats", "2", "--rounds", "2", "--skip-training"]


@pytest.fixture(scope="module")
def patches(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small CNN, prepared once (fp32 and fp16) for every test of this module."""
    directory = tmp_path_factory.mktemp("gpu-bench")
    gpu.prepare(directory, ["cnn"])
    return directory


def test_bench_constants_are_the_product_s() -> None:
    from patch_training.export.fp16 import FP16_ATOL

    assert RuntimeSettings().gpu_min_input_elements == gpu.MIN_INPUT_ELEMENTS
    assert gpu.FP16_ATOL == FP16_ATOL


def test_prepare_writes_fp32_and_fp16_patches_and_their_index(patches: Path) -> None:
    index = json.loads((patches / "patches.json").read_text())
    entry = index["nets"]["cnn"]
    assert entry["net"] == "SmallCNN" and index["input_shape"] == [3, 32, 32]
    for kind in ("fp32", "fp16"):
        assert (patches / entry[kind]).stat().st_size == entry["bytes"][kind]
    assert entry["bytes"]["fp16"] < 0.6 * entry["bytes"]["fp32"]
    assert 0 < entry["fp16_parity_cpu_max_abs_diff"] <= gpu.FP16_ATOL
    before = (patches / "cnn.onnx").stat().st_mtime_ns
    assert gpu.load_index(patches, ["cnn"]) == index  # present: not exported again
    assert (patches / "cnn.onnx").stat().st_mtime_ns == before


@pytest.mark.skipif(HAS_CUDA, reason="this onnxruntime has the CUDA provider: see the CUDA test")
def test_cpu_run_records_the_cpu_provider_and_never_writes_the_gpu_results(
    patches: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gpu, "RESULTS", tmp_path / "gpu.json")
    monkeypatch.setattr(gpu, "CPU_RESULTS", tmp_path / "gpu-cpu.json")
    result = gpu.main([*TINY, "--patches", str(patches)])
    assert result is not None
    assert not (tmp_path / "gpu.json").exists()
    assert json.loads((tmp_path / "gpu-cpu.json").read_text()) == result
    assert result["provider"] == CPU and result["cuda_measured"] is False
    assert "no CUDA execution provider" in result["cuda_not_measured_because"]
    cnn = result["patch_stage"]["cnn"]
    assert cnn["provider"] == CPU and cnn["patch_stage_io_binding"] is False
    for throughput in (cnn["throughput"], cnn["fp16"]["throughput"]):
        assert set(throughput) == {"1", "3"}
        for row in throughput.values():
            mine, raw = row["patch_stage_rows_per_s"], row["raw_ort_io_binding_rows_per_s"]
            assert mine > 0 and raw > 0 and len(row["rounds"]["patch_stage"]) == 2
            assert row["ratio"] == pytest.approx(mine / raw, rel=1e-2)
            assert row["target_met"] == (row["ratio"] >= 0.8)
    assert cnn["fp16"]["parity_on_provider"]["within"] is True
    assert result["targets_met"]["cnn"] == all(r["target_met"] for r in cnn["throughput"].values())
    assert result["e2e_added_latency_image"]["status"] == "not measured"
    assert result["training_100k_rows_gpu"] == {"status": "not measured", "why": "--skip-training"}


def test_raw_io_binding_baseline_answers_what_the_patch_stage_answers(patches: Path) -> None:
    import numpy as np

    blob = (patches / "cnn.onnx").read_bytes()
    patch = gpu.session_for(blob, [CPU], 1)
    x = np.random.default_rng(0).random((4, *gpu.SHAPE)).astype(np.float32)
    np.testing.assert_allclose(gpu.RawBound(blob, [CPU], 1).run(x), patch.run(x), atol=1e-6)


@pytest.mark.parametrize(
    "argv", [["--nets", "vgg"], ["--batches", "0"], ["--repeats", "0"], ["--nets", ""]]
)
def test_bad_arguments_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        gpu.parse_args(argv)


@pytest.mark.skipif(not HAS_CUDA, reason="CUDA provider absent: onnxruntime-gpu and a GPU needed")
def test_cuda_run_binds_io_and_writes_the_gpu_results(
    patches: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gpu, "RESULTS", tmp_path / "gpu.json")
    result = gpu.main([*TINY, "--patches", str(patches)])
    assert result is not None and result["provider"] == CUDA and result["cuda_measured"]
    assert result["patch_stage"]["cnn"]["patch_stage_io_binding"] is True
    assert json.loads((tmp_path / "gpu.json").read_text()) == result
