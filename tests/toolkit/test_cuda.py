"""CUDA builds on a machine without a GPU: every zoo family compiles for sm_90 with every kernel
given a GPU schedule, its CUDA code compiled by nvcc, and its artifact's manifest and files right.
A kernel left unscheduled, CUDA code that does not compile and a missing nvcc are one-line errors."""

import json
import stat

import pytest
from click.testing import CliRunner

import models
from toolkit import cuda, runtime, tune
from toolkit.cli import cli
from toolkit.compile import compile_model
from toolkit.errors import CheckFailed, DltkError
from toolkit.export import export_model
from toolkit.onnx_file import input_specs, load_onnx, output_specs
from toolkit.runtime.artifact import MANIFEST, open_artifact, sha256_file

SM_90 = '{"kind": "cuda", "arch": "sm_90"}'
needs_nvcc = pytest.mark.skipif(cuda.find_nvcc() is None, reason="checking CUDA code needs nvcc (pip install nvidia-cuda-nvcc)")


@pytest.fixture(scope="module")
def cuda_zoo(tmp_path_factory):
    """build(name): the family at its test size, exported and compiled for sm_90 once per run."""
    directory = tmp_path_factory.mktemp("cuda-zoo")
    built = {}

    def build(name):
        if name not in built:
            export_model(name, directory / f"{name}.onnx")
            try:
                built[name] = compile_model(directory / f"{name}.onnx", directory / f"{name}.tvm", target=SM_90)
            except DltkError as e:  # kept, so the family's own test fails with it and the others still run
                built[name] = e
        if isinstance(built[name], Exception):
            raise built[name]
        return built[name]

    with pytest.MonkeyPatch.context() as patch:
        for name, spec in list(models.REGISTRY.items()):
            patch.setitem(models.REGISTRY, name, spec.test_size())
        yield build


@needs_nvcc
@pytest.mark.parametrize("name", list(models.REGISTRY))
def test_family_builds_for_sm_90_with_every_kernel_scheduled_and_checked(name, cuda_zoo):
    report = cuda_zoo(name)
    path = report.artifact.path
    onnx_path = path.with_suffix(".onnx")
    manifest = json.loads((path / MANIFEST).read_text())

    assert report.verification == []
    assert manifest["device"] == "cuda"
    assert manifest["target"]["kind"] == "cuda" and manifest["target"]["arch"] == "sm_90"
    assert manifest["target"]["host"]["kind"] == "llvm"
    verification = manifest["verification"]
    assert verification["status"] == "skipped" and verification["reason"] == "no cuda device on the compiling machine"
    assert manifest["engine"]["chosen"] == "tvm" and manifest["engine"]["reason"].startswith("not measured")

    device_code = manifest["device_code"]
    assert device_code["kernels"] > 0
    assert device_code["scheduled_by"]["dlight"] + device_code["scheduled_by"]["tuning_records"] == device_code["kernels"]
    assert device_code["arch"] == "sm_90" and device_code["form"].startswith("CUDA C source")
    assert device_code["checked"]["compiler"].startswith("nvcc ") and device_code["checked"]["arch"] == "sm_90"

    # The files: exactly these three, each matching its sha256, the library carrying the CUDA kernels.
    assert sorted(p.name for p in path.iterdir()) == ["manifest.json", "model.onnx", "model.so"]
    assert sorted(manifest["files"]) == ["model.onnx", "model.so"]
    for file, entry in manifest["files"].items():
        assert entry["sha256"] == sha256_file(path / file) and entry["bytes"] == (path / file).stat().st_size
    assert b"__global__" in (path / "model.so").read_bytes()
    assert manifest["source_onnx_sha256"] == sha256_file(onnx_path)
    model = load_onnx(onnx_path)
    assert manifest["inputs"] == [s.to_json() for s in input_specs(model)]
    assert manifest["outputs"] == [s.to_json() for s in output_specs(model)]
    assert open_artifact(path).device == "cuda"

    with pytest.raises(DltkError, match="compiled for cuda, not cpu"):
        runtime.load(path, device="cpu", backend="tvm")
    with pytest.raises(DltkError, match="no cuda device here"):
        runtime.load(path, device="cuda", backend="tvm")


@needs_nvcc
def test_a_kernel_left_without_a_gpu_schedule_is_named_in_one_line(cuda_zoo, tmp_path, monkeypatch):
    from tvm.s_tir import dlight as dl

    lenet = cuda_zoo("lenet").artifact
    onnx_path = lenet.path.with_suffix(".onnx")
    monkeypatch.setattr(tune, "gpu_default_rules", lambda: [dl.gpu.Matmul()])  # nothing for the pooling kernels
    with pytest.raises(CheckFailed, match=r"\d+ kernel\(s\) have no GPU schedule: .*max_pool2d"):
        compile_model(onnx_path, tmp_path / "partial.tvm", target=SM_90)

    monkeypatch.setattr(tune, "gpu_default_rules", list)  # no rules at all: every kernel is named
    result = CliRunner().invoke(cli, ["compile", str(onnx_path), "-o", str(tmp_path / "none.tvm"), "--target", SM_90])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    kernels = lenet.manifest["device_code"]["kernels"]
    assert lines[-1].startswith(f"error: {kernels} kernel(s) have no GPU schedule: ") and "Traceback" not in result.output
    assert not (tmp_path / "partial.tvm").exists() and not (tmp_path / "none.tvm").exists()


@needs_nvcc
def test_cuda_code_that_does_not_compile_is_a_failed_check():
    source = 'extern "C" __global__ void broken(float* x) { x[0] = undeclared_name; }\n'
    with pytest.raises(CheckFailed, match="does not compile for sm_90: .*undeclared_name"):
        cuda.check_with_nvcc([source], "sm_90", cuda.find_nvcc())


@pytest.fixture
def no_cuda_toolkit(tmp_path, monkeypatch):
    """No nvcc on PATH, no CUDA_PATH or CUDA_HOME, nothing in the usual CUDA homes."""
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    monkeypatch.delenv("CUDA_PATH", raising=False)
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.setattr(cuda, "CUDA_HOMES", ())


@pytest.fixture
def no_nvcc(no_cuda_toolkit, monkeypatch):
    """... and no nvidia-cuda-nvcc wheel either."""
    monkeypatch.setattr(cuda, "_wheel_homes", list)
    assert cuda.find_nvcc() is None


def test_without_nvcc_compiling_for_cuda_says_how_to_get_it_in_one_line(lenet_onnx, tmp_path, no_nvcc):
    result = CliRunner().invoke(cli, ["compile", str(lenet_onnx), "-o", str(tmp_path / "gpu.tvm"), "--target", SM_90])
    assert result.exit_code == 2
    assert result.output.strip() == (
        "error: compiling CUDA code for sm_90 on a machine without a GPU needs nvcc to check it, and none was found "
        "(pip install nvidia-cuda-nvcc, or install the CUDA toolkit and put its bin/ on PATH)"
    )
    assert not (tmp_path / "gpu.tvm").exists()


def test_nvcc_is_found_where_the_nvidia_cuda_nvcc_wheel_puts_it(tmp_path, monkeypatch, no_cuda_toolkit):
    """site-packages/nvidia/cu13/bin/nvcc, on no PATH."""
    nvcc = tmp_path / "site" / "nvidia" / "cu13" / "bin" / "nvcc"
    nvcc.parent.mkdir(parents=True)
    nvcc.write_text("#!/bin/sh\n")
    nvcc.chmod(nvcc.stat().st_mode | stat.S_IXUSR)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert cuda.find_nvcc() == str(nvcc)
