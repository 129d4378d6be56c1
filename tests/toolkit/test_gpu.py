"""The GPU path on a real CUDA GPU (`pytest -m gpu`; skipped where there is none): CUDA artifacts
run through the runtime and match ONNX Runtime's CUDA provider and PyTorch on CUDA, the CUDA
provider is really the one running, an artifact built without a GPU compiles and runs here, and
DLPack hands device tensors to TVM and back without going through the host."""

import numpy as np
import pytest

import models
from toolkit import runtime
from toolkit.compile import compile_model
from toolkit.export import export_model
from toolkit.runtime.ort import OrtSession
from toolkit.timing import Budget


def _gpu_missing() -> str | None:
    try:
        import torch
    except ImportError:
        return "needs a CUDA GPU and torch with CUDA (torch is not installed)"
    if not torch.cuda.is_available():
        return "needs a CUDA GPU: torch sees none here"
    return None


pytestmark = [pytest.mark.gpu, pytest.mark.skipif(_gpu_missing() is not None, reason=str(_gpu_missing()))]

# A family per kind of kernel: dense layers, convolutions and pooling, attention, a rewritten LSTM, residual blocks.
FAMILIES = ["mlp", "lenet", "gpt", "lstm", "resnet-digits"]
BATCHES = (1, 3)
# cuDNN convolutions (PyTorch's and ONNX Runtime's) run in TF32 by default on Ampere and later.
ATOL, RTOL = 1e-3, 1e-2


@pytest.fixture(scope="module")
def exported(tiny_zoo, tmp_path_factory):
    directory = tmp_path_factory.mktemp("gpu-exports")
    paths = {}

    def export(name):
        if name not in paths:
            paths[name] = directory / f"{name}.onnx"
            export_model(name, paths[name])
        return paths[name]

    return export


def _torch_outputs(name, sample):
    import torch

    module = models.get(name).create().to("cuda")
    with torch.no_grad():
        result = module(*[x.to("cuda") for x in sample])
    return [v.cpu().numpy() for v in (result if isinstance(result, tuple) else (result,))]


@pytest.mark.parametrize("name", FAMILIES)
def test_cuda_artifact_matches_onnx_runtime_cuda_and_torch_cuda(name, exported, tmp_path):
    onnx_path = exported(name)
    report = compile_model(onnx_path, tmp_path / f"{name}.tvm", target="cuda")
    manifest = report.artifact.manifest
    assert manifest["device"] == "cuda" and manifest["verification"]["status"] == "passed"
    assert manifest["device_code"]["form"].startswith("binary")

    tvm_session = runtime.load(report.artifact.path, device="cuda", backend="tvm")
    ort_session = OrtSession(onnx_path, device="cuda")
    assert ort_session.providers[0] == "CUDAExecutionProvider"  # really on the GPU, not fallen back to the CPU
    spec = models.get(name)
    for batch in BATCHES:
        sample = spec.sample(batch)
        feeds = {n: x.numpy() for n, x in zip(spec.input_names, sample)}
        expected = _torch_outputs(name, sample)
        for session in (tvm_session, ort_session):
            got = session.run(feeds)
            for output, want in zip(spec.output_names, expected):
                np.testing.assert_allclose(got[output], want, atol=ATOL, rtol=RTOL,
                                           err_msg=f"{name} {session.backend} batch {batch} {output} vs torch on cuda")


def test_an_artifact_built_without_a_gpu_compiles_and_runs_here(exported, tmp_path, monkeypatch):
    """TVM's fallback keeps CUDA source, as on a machine without a GPU; loading it here compiles it."""
    onnx_path = exported("lenet")
    monkeypatch.setenv("TVM_COMPILE_FORCE_FALLBACK", "1")
    report = compile_model(onnx_path, tmp_path / "source.tvm", target='{"kind": "cuda", "arch": "sm_90"}')
    monkeypatch.delenv("TVM_COMPILE_FORCE_FALLBACK")
    assert report.artifact.manifest["device_code"]["form"].startswith("CUDA C source")
    assert report.artifact.manifest["verification"]["status"] == "passed"  # loaded, compiled and run on this GPU

    x = models.get("lenet").sample(3)[0].numpy()
    got = runtime.load(report.artifact.path, device="cuda", backend="tvm").run({"input": x})["logits"]
    want = OrtSession(onnx_path, device="cuda").run({"input": x})["logits"]
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=RTOL)


def test_dlpack_hands_cuda_tensors_to_tvm_and_back_without_the_host(exported, tmp_path, monkeypatch):
    import torch

    artifact = compile_model(exported("lenet"), tmp_path / "lenet.tvm", target="cuda").artifact
    session = runtime.load(artifact.path, device="cuda", backend="tvm")
    x = models.get("lenet").sample(4)[0].to("cuda")
    handed, function_of = [], session._function

    def recording(name):
        function = function_of(name)

        def call(*args):
            handed.extend(args)
            return function(*args)

        return call

    monkeypatch.setattr(session, "_function", recording)
    logits = session.run_dlpack({"input": x})["logits"]
    (tensor,) = handed
    assert tensor.device.dlpack_device_type() == 2 and tensor.data_ptr() == x.data_ptr()  # kDLCUDA, the same memory
    on_gpu = torch.from_dlpack(logits)
    assert on_gpu.device.type == "cuda" and on_gpu.data_ptr() == logits.data_ptr()
    np.testing.assert_allclose(on_gpu.cpu().numpy(), session.run({"input": x.cpu().numpy()})["logits"], atol=1e-5)

    with pytest.raises(ValueError, match="is on cpu"):
        session.run_dlpack({"input": x.cpu()})


def test_bench_on_cuda_times_every_backend_on_the_gpu(tiny_zoo):
    from toolkit.bench import Plan, run_benchmark

    budget = Budget(warmup=3, min_iterations=20, min_seconds=0.05, max_seconds=5, repeats=1)
    run = run_benchmark(["lenet"], Plan(backends=("torch", "ort", "tvm"), batches=(1, 8), device="cuda", budget=budget))
    assert run.env["gpu"]
    assert {(r["backend"], r["batch"]) for r in run.results} == {(b, n) for b in ("torch", "ort", "tvm") for n in (1, 8)}
    assert all(r["device"] == "cuda" and r["latency_ms"]["p50"] > 0 for r in run.results)
