"""Models written by others (toolkit.corpus) through `dltk compile`: a quick subset of benchmarks/coverage.py."""

import numpy as np
import onnx
import pytest

from toolkit import corpus
from toolkit.compile import compile_model
from toolkit.runtime import load


def test_the_corpus_spans_the_kinds_users_bring():
    models = corpus.models()
    names = [m.name for m in models]
    assert len(names) == len(set(names)) >= 30
    assert {m.kind for m in models} >= {"encoder", "decoder", "encoder-decoder", "vision transformer", "cnn", "audio",
                                        "old opset", "external data"}
    exporters = {m.exporter for m in models}
    assert {"torch.onnx legacy", "torch.onnx dynamo", "optimum.exporters.onnx"} <= exporters
    with pytest.raises(Exception, match="no corpus model 'nope'"):
        corpus.find("nope")


def test_old_opset_file_compiles_and_is_verified(tmp_path):
    path = corpus.build("pt-batchnorm2d_eval", tmp_path / "bn")
    assert onnx.load(str(path)).opset_import[0].version == 6
    report = compile_model(path, tmp_path / "bn.tvm", choose_engine=False)
    verification = report.artifact.manifest["verification"]
    assert verification["status"] == "passed"
    assert verification["reference"] in ("onnxruntime", "onnx.reference")
    assert verification["max_abs_error"] < 1e-4


def test_hf_encoder_with_dynamic_axes_and_external_data_compiles_and_matches_pytorch(tmp_path):
    import torch

    path = corpus.build("bert-external", tmp_path / "bert")
    stored = onnx.load(str(path), load_external_data=False)
    external = [t for t in stored.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert {t.name for t in external} >= {"model.embeddings.word_embeddings.weight"}
    assert (path.parent / "model.onnx.data").stat().st_size > path.stat().st_size
    report = compile_model(path, tmp_path / "bert.tvm", choose_engine=False)
    manifest = report.artifact.manifest
    assert manifest["verification"]["status"] == "passed"
    assert manifest["verification"]["reference"] == "onnxruntime"
    assert [tuple(i["shape"]) for i in manifest["inputs"]] == [("batch", "sequence")] * 2
    # The artifact is self-contained: the weights moved into model.so and its model.onnx.
    shipped = onnx.load(str(report.artifact.path / "model.onnx"), load_external_data=False)
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in shipped.graph.initializer)
    assert sorted(p.name for p in report.artifact.path.iterdir()) == ["manifest.json", "model.onnx", "model.so"]
    # One artifact runs any length, and agrees with the PyTorch model it came from.
    model, _ = corpus.hf_module("bert")
    session = load(report.artifact.path, backend="tvm")
    rng = np.random.default_rng(1)
    for batch, length in ((1, 5), (3, 17)):
        ids = rng.integers(0, 100, (batch, length)).astype(np.int64)
        mask = np.ones_like(ids)
        mask[:, length - 2:] = 0  # padding at the end
        got = session.run({"input_ids": ids, "attention_mask": mask})["output"]
        with torch.no_grad():
            want = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).last_hidden_state.numpy()
        assert got.shape == (batch, length, 32)
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-3)


def test_zoo_graph_gets_random_weights_in_place_of_its_fills(tmp_path):
    import onnxruntime as ort

    path = corpus.zoo_light("squeezenet", tmp_path / "squeezenet.onnx")
    model = onnx.load(str(path))
    assert "ConstantOfShape" not in {n.op_type for n in model.graph.node}
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    assert weights["conv1_w_0"].shape == (64, 3, 3, 3) and weights["conv1_w_0"].std() > 0.1
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    probabilities = session.run(None, {"data_0": x})[0]
    assert probabilities.shape == (1, 1000, 1, 1)
    assert np.isclose(probabilities.sum(), 1.0, atol=1e-4) and probabilities.max() < 0.99
