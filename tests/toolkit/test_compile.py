import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from toolkit import runtime
from toolkit.compile import compile_model
from toolkit.errors import CheckFailed, DltkError
from toolkit.runtime.artifact import FORMAT, sha256_file


def test_artifact_layout_and_manifest(lenet_onnx, lenet_artifact):
    assert sorted(p.name for p in lenet_artifact.iterdir()) == ["manifest.json", "model.onnx", "model.so"]
    manifest = json.loads((lenet_artifact / "manifest.json").read_text())
    assert manifest["format"] == FORMAT
    assert manifest["model"] == "lenet"
    assert manifest["inputs"] == [{"name": "input", "shape": ["batch", 1, 8, 8], "dtype": "float32"}]
    assert manifest["outputs"] == [{"name": "logits", "shape": ["batch", 10], "dtype": "float32"}]
    assert manifest["target"]["kind"] == "llvm" and manifest["device"] == "cpu"
    assert manifest["source_onnx_sha256"] == sha256_file(lenet_onnx)
    for name, entry in manifest["files"].items():
        assert entry["sha256"] == sha256_file(lenet_artifact / name)
    verification = manifest["verification"]
    assert verification["status"] == "passed" and verification["reference"] == "onnxruntime"
    assert verification["max_abs_error"] < 1e-4
    assert {"dltk", "tvm", "onnx", "onnxruntime"} <= set(manifest["versions"])


def test_one_artifact_serves_any_batch(lenet_onnx, lenet_artifact):
    compiled = runtime.load(lenet_artifact)
    reference = ort.InferenceSession(str(lenet_onnx))
    for batch in (1, 3, 8):
        x = np.random.default_rng(batch).standard_normal((batch, 1, 8, 8)).astype(np.float32)
        got = compiled.run({"input": x})["logits"]
        np.testing.assert_allclose(got, reference.run(None, {"input": x})[0], atol=1e-4, rtol=1e-3)


class _SmallNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.fc = torch.nn.Linear(4, 2)

    def forward(self, image):
        return torch.softmax(self.fc(self.conv(image).mean(dim=(2, 3))), dim=-1)


def test_compiles_an_onnx_file_not_made_by_dltk(tmp_path):
    path = tmp_path / "plain.onnx"
    torch.manual_seed(0)
    net = _SmallNet().eval()
    x = torch.randn(2, 3, 10, 10)
    torch.onnx.export(net, (x,), str(path), input_names=["image"], output_names=["probs"], dynamo=True)
    artifact = compile_model(path, tmp_path / "plain.tvm").artifact
    assert artifact.manifest["model"] == "plain"
    got = runtime.load(artifact.path).run({"image": x.numpy()})["probs"]
    np.testing.assert_allclose(got, net(x).detach().numpy(), atol=1e-5)


def test_tampered_artifact_is_refused(lenet_artifact, tmp_path):
    copy = tmp_path / "copy.tvm"
    shutil.copytree(lenet_artifact, copy)
    with open(copy / "model.so", "ab") as f:
        f.write(b"\0")
    with pytest.raises(DltkError, match="model.so does not match its sha256"):
        runtime.load(copy)


def test_existing_non_artifact_output_is_not_clobbered(lenet_onnx, tmp_path):
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "notes.txt").write_text("mine")
    with pytest.raises(DltkError, match="exists and is not a dltk artifact"):
        compile_model(lenet_onnx, tmp_path / "keep")
    assert (tmp_path / "keep" / "notes.txt").read_text() == "mine"


def test_failed_verification_leaves_no_artifact(lenet_onnx, tmp_path):
    with pytest.raises(CheckFailed, match="tvm vs onnxruntime: DIFFER.*not written"):
        compile_model(lenet_onnx, tmp_path / "strict.tvm", atol=0.0, rtol=0.0)
    assert list(tmp_path.iterdir()) == []


def test_recompiling_replaces_an_earlier_artifact(lenet_onnx, tmp_path):
    out = tmp_path / "a.tvm"
    first = compile_model(lenet_onnx, out).artifact.manifest
    second = compile_model(lenet_onnx, out).artifact.manifest
    assert first["source_onnx_sha256"] == second["source_onnx_sha256"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tvm"]


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "no such file"),
        (b"this is not a model", "not an ONNX model"),
    ],
)
def test_bad_input_files_are_usage_errors(tmp_path, content, message):
    path = tmp_path / "model.onnx"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DltkError, match=message) as info:
        compile_model(path, tmp_path / "out.tvm")
    assert info.value.exit_code == 2
    assert not (tmp_path / "out.tvm").exists()


def test_truncated_onnx_is_a_usage_error(lenet_onnx, tmp_path):
    path = tmp_path / "cut.onnx"
    path.write_bytes(lenet_onnx.read_bytes()[: lenet_onnx.stat().st_size // 2])
    with pytest.raises(DltkError, match="not an ONNX model or is truncated"):
        compile_model(path, tmp_path / "out.tvm")


def test_unsupported_op_names_the_op(tmp_path):
    from onnx import TensorProto, helper

    node = helper.make_node("Det", ["x"], ["y"])
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])],
    )
    path = tmp_path / "det.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    with pytest.raises(DltkError, match="TVM cannot import this model: .*Det"):
        compile_model(path, tmp_path / "det.tvm")


def test_compile_names_every_op_tvm_cannot_import(tmp_path):
    from click.testing import CliRunner

    from tests.toolkit.test_inspect import _model_with_ops_tvm_lacks
    from toolkit.cli import cli

    path = tmp_path / "many.onnx"
    onnx.save(_model_with_ops_tvm_lacks(), path)
    result = CliRunner().invoke(cli, ["compile", str(path), "-o", str(tmp_path / "many.tvm")])
    assert result.exit_code == 2
    (line,) = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert "no TVM converter for 4 ops: Det (opset 18; node det), Scale (domain my.ops v2; 2 nodes, first scale_1), " \
           "Relu (domain my.ops v2; node my_relu), Loop (opset 18; node inner_loop)" in line
    assert not (tmp_path / "many.tvm").exists()


@pytest.mark.parametrize("change, shape", [
    (lambda m: m["inputs"][0].update(shape=["batch", 1, 4, 16]), (1, 1, 4, 16)),  # inputs that lie about shape
    (lambda m: m.update(variants={"1": "main_b99"}), (1, 1, 8, 8)),  # a variant naming a missing function
])
def test_a_manifest_that_lies_about_its_library_is_a_usage_error(lenet_artifact, tmp_path, change, shape):
    copy = tmp_path / "copy.tvm"
    shutil.copytree(lenet_artifact, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    change(manifest)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    session = runtime.load(copy, backend="tvm")
    with pytest.raises(DltkError, match="cannot run these inputs.*recompile the artifact"):
        session.run({"input": np.zeros(shape, np.float32)})


def _audio_conv(path):
    """A kernel-20 Conv1d over (batch, 1, samples): it cannot run fewer than 20 samples."""
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((2, 1, 20)).astype(np.float32), "weight")
    graph = helper.make_graph([helper.make_node("Conv", ["audio", "weight"], ["features"], kernel_shape=[20], strides=[2])],
                              "audio", [helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["batch", 1, "samples"])],
                              [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 2, None])], [weight])
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_verification_lengthens_a_sequence_the_model_refuses_at_its_usual_sizes(tmp_path):
    """1, 3 or 8 samples are too few: verification doubles the length until ONNX Runtime accepts it
    (32, 24, 32), keeps the batch sizes, and records the dims it ran."""
    _audio_conv(tmp_path / "audio.onnx")
    artifact = compile_model(tmp_path / "audio.onnx", tmp_path / "audio.tvm", choose_engine=False).artifact
    verification = artifact.manifest["verification"]
    assert verification["status"] == "passed"
    assert verification["verified_dims"] == [{"batch": 1, "samples": 32}, {"batch": 3, "samples": 24}, {"batch": 8, "samples": 32}]


def test_fixed_dims_make_the_artifact_static_in_those_dims(tmp_path):
    artifact = compile_model(_audio_conv(tmp_path / "audio.onnx"), tmp_path / "audio.tvm", choose_engine=False,
                             dims={"samples": 40}).artifact
    assert [i["shape"] for i in artifact.manifest["inputs"]] == [["batch", 1, 40]]
    assert artifact.manifest["fixed_dims"] == {"samples": 40}
    assert artifact.manifest["verification"]["status"] == "passed"
    audio = np.random.default_rng(1).standard_normal((2, 1, 40)).astype(np.float32)
    expected = ort.InferenceSession(str(tmp_path / "audio.onnx")).run(None, {"audio": audio})[0]
    np.testing.assert_allclose(runtime.load(artifact.path, backend="tvm").run({"audio": audio})["features"], expected, atol=1e-5)
    with pytest.raises(DltkError, match="no dim named height .*its symbolic dims: batch, samples"):
        compile_model(tmp_path / "audio.onnx", tmp_path / "other.tvm", dims={"height": 32})
