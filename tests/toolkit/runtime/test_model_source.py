import pytest

from toolkit.errors import DltkError
from toolkit.runtime.model_source import ARTIFACT, CHECKPOINT, ONNX, ZOO, ModelSource


def test_kinds_come_from_the_path_and_the_file_header(lenet_checkpoint, lenet_onnx, lenet_artifact, tmp_path):
    renamed = tmp_path / "weights.bin"
    renamed.write_bytes(lenet_checkpoint.read_bytes())  # a checkpoint under another suffix: told by its zip header
    assert [ModelSource.of(p).kind for p in (lenet_artifact, lenet_onnx, lenet_checkpoint, renamed)] == \
        [ARTIFACT, ONNX, CHECKPOINT, CHECKPOINT]
    assert ModelSource.of("lenet").kind == ZOO
    assert ModelSource.of(tmp_path / "missing.pt").kind == CHECKPOINT
    assert ModelSource.of(tmp_path / "missing.onnx").kind == ONNX


def test_name_and_metadata_of_every_kind(lenet_onnx, lenet_artifact, tmp_path):
    renamed = tmp_path / "copy.onnx"
    renamed.write_bytes(lenet_onnx.read_bytes())
    assert ModelSource.of(renamed).name == "lenet"  # what the export recorded, not the file name
    assert ModelSource.of(renamed).metadata()["dltk.model"] == "lenet"
    assert ModelSource.of(lenet_artifact).name == "lenet"
    assert ModelSource.of(lenet_artifact).onnx_path == lenet_artifact / "model.onnx"
    assert ModelSource.of("mlp").name == "mlp" and ModelSource.of("mlp").metadata() == {}
    foreign = tmp_path / "notes.onnx"
    foreign.write_text("hello")
    assert ModelSource.of(foreign).name == "notes"  # unreadable: the stem, and loading says why
    with pytest.raises(DltkError, match="is not an ONNX model"):
        ModelSource.of(foreign).metadata()


def test_require_names_what_the_path_is(lenet_checkpoint, tmp_path):
    with pytest.raises(DltkError, match=r"lenet.pt is a checkpoint, not an ONNX file or an artifact \(export it\)"):
        ModelSource.of(lenet_checkpoint).require(ONNX, ARTIFACT, fix="export it")
    with pytest.raises(DltkError, match="no such file or directory"):
        ModelSource.of(tmp_path / "gone").require(ONNX, ARTIFACT, fix="export it")
