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


def test_compiled_artifacts_are_cached_by_model_and_records(lenet_onnx, tmp_path, monkeypatch):
    import toolkit.compile

    compiles, tunings = [], []

    def fake_compile(onnx_path, artifact, target, tuning, choose_engine, log):  # records the call, writes a stand-in
        compiles.append(artifact)
        tunings.append(tuning)
        with staging(artifact) as tmp:
            (tmp / "model.so").write_bytes(b"library")
            write_manifest(tmp, {"model": "lenet", "inputs": [], "outputs": [], "device": "cpu"})

    monkeypatch.setattr(toolkit.compile, "compile_model", fake_compile)
    monkeypatch.setattr("toolkit.paths.SHIPPED_RECORDS", tmp_path / "tuning")
    monkeypatch.setenv("DLTK_CACHE_DIR", str(tmp_path / "cache"))
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
    user_db = tmp_path / "cache" / "tuning" / "llvm-x-2c"  # the user's own records, applied by default
    user_db.mkdir(parents=True)
    (user_db / "database_tuning_record.json").write_text("[0, []]\n")
    before = compiles[-1]
    assert sources.compiled_artifact(lenet_onnx, "cpu", log=print) != before and len(compiles) == 4
    assert tunings[-1].shipped and tunings[-1].db is None


def test_untuned_artifacts_apply_no_records_at_all(lenet_onnx, tmp_path, monkeypatch):
    import toolkit.compile

    tunings = []

    def fake_compile(onnx_path, artifact, target, tuning, choose_engine, log):
        tunings.append(tuning)
        with staging(artifact) as tmp:
            (tmp / "model.so").write_bytes(b"library")
            write_manifest(tmp, {"model": "lenet", "inputs": [], "outputs": [], "device": "cpu"})

    monkeypatch.setattr(toolkit.compile, "compile_model", fake_compile)
    monkeypatch.setenv("DLTK_CACHE_DIR", str(tmp_path / "cache"))
    tuned = sources.compiled_artifact(lenet_onnx, "cpu")
    untuned = sources.compiled_artifact(lenet_onnx, "cpu", untuned=True)
    assert untuned != tuned and untuned.name.endswith("-untuned")
    assert not tunings[-1].shipped and tunings[-1].db != sources.paths.tuning_db_root()
    assert tunings[-1].trials == 0


def test_untuned_backend_needs_a_model_not_an_artifact(tmp_path):
    with staging(tmp_path / "a.tvm") as tmp:
        (tmp / "model.so").write_bytes(b"library")
        write_manifest(tmp, {"model": "m", "inputs": [], "outputs": [], "device": "cpu"})
    with pytest.raises(DltkError, match="tvm-untuned backend compiles the model anew"):
        open_source(str(tmp_path / "a.tvm"), ["ort", "tvm-untuned"])
