import pytest

from toolkit import sources
from toolkit.errors import DltkError
from toolkit.runtime.artifact import staging, write_manifest
from toolkit.sources import open_source


def test_torch_backends_need_a_zoo_model(lenet_onnx):
    with pytest.raises(DltkError, match="torch backend needs a zoo model"):
        open_source(str(lenet_onnx), ["torch", "ort"])
    with pytest.raises(DltkError, match="torch.compile backend needs a zoo model"):
        open_source(str(lenet_onnx), ["torch.compile"])


def test_unknown_backend_is_a_usage_error():
    with pytest.raises(DltkError, match="unknown backend 'tensorrt'"):
        open_source("lenet", ["tensorrt"])


def test_compiled_artifacts_are_cached_by_model_and_shipped_records(lenet_onnx, tmp_path, monkeypatch):
    import toolkit.compile

    compiles = []

    def fake_compile(onnx_path, artifact, target, log):  # records the call, writes a stand-in artifact
        compiles.append(artifact)
        with staging(artifact) as tmp:
            (tmp / "model.so").write_bytes(b"library")
            write_manifest(tmp, {"model": "lenet", "inputs": [], "outputs": [], "device": "cpu"})

    monkeypatch.setattr(toolkit.compile, "compile_model", fake_compile)
    monkeypatch.setattr("toolkit.paths.SHIPPED_RECORDS", tmp_path / "tuning")
    (tmp_path / "tuning" / "llvm-x-2c").mkdir(parents=True)
    first = sources.compiled_artifact(lenet_onnx, "cpu", log=print)
    assert sources.compiled_artifact(lenet_onnx, "cpu", log=print) == first and len(compiles) == 1
    (tmp_path / "tuning" / "llvm-x-2c" / "database_tuning_record.json").write_text("[0, []]\n")  # new records
    assert sources.compiled_artifact(lenet_onnx, "cpu", log=print) != first and len(compiles) == 2
    lines = []
    with open(compiles[-1] / "model.so", "ab") as f:  # a damaged cache entry
        f.write(b"\0")
    assert sources.compiled_artifact(lenet_onnx, "cpu", log=lines.append) == compiles[-1] and len(compiles) == 3
    assert any("rebuilding the damaged cache entry" in line and str(compiles[-1]) in line for line in lines)
    assert sources.compiled_artifact(lenet_onnx, "cpu", log=print) == compiles[-1] and len(compiles) == 3
