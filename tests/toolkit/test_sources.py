import pytest

from toolkit import sources
from toolkit.errors import DltkError
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

    def fake_compile(onnx_path, artifact, target, log):  # records the call, writes a manifest only
        compiles.append(artifact)
        artifact.mkdir(parents=True)
        (artifact / "manifest.json").write_text("{}")

    monkeypatch.setattr(toolkit.compile, "compile_model", fake_compile)
    monkeypatch.setattr("toolkit.paths.SHIPPED_RECORDS", tmp_path / "tuning")
    (tmp_path / "tuning" / "llvm-x-2c").mkdir(parents=True)
    first = sources.compiled_artifact(lenet_onnx, "cpu", log=print)
    assert sources.compiled_artifact(lenet_onnx, "cpu", log=print) == first and len(compiles) == 1
    (tmp_path / "tuning" / "llvm-x-2c" / "database_tuning_record.json").write_text("[0, []]\n")  # new records
    assert sources.compiled_artifact(lenet_onnx, "cpu", log=print) != first and len(compiles) == 2
