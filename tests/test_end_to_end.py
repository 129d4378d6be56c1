"""Train a few steps -> export -> compile -> run: TVM and ONNX Runtime agree with PyTorch."""

import json

import numpy as np
import onnx
import pytest
import torch

import models
from toolkit import runtime
from toolkit.compile import compile_model
from toolkit.export import export_model
from toolkit.train import load_model, train_model


@pytest.mark.parametrize("name", ["mlp", "lenet"])
def test_pipeline_agrees_with_pytorch_on_the_held_out_set(name, tmp_path):
    result = train_model(name, tmp_path / "m.pt", epochs=2)
    export_model(str(tmp_path / "m.pt"), tmp_path / "m.onnx")
    compile_model(tmp_path / "m.onnx", tmp_path / "m.tvm", choose_engine=False)

    spec = models.get(name)
    data = spec.data()
    with torch.no_grad():
        expected = load_model(str(tmp_path / "m.pt")).module(data.test_x).numpy()
    for session in (runtime.load(tmp_path / "m.onnx"), runtime.load(tmp_path / "m.tvm", backend="tvm")):
        got = session.run({"input": data.test_x.numpy()})["logits"]  # the whole held-out set as one batch
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-3)
        accuracy = (got.argmax(1) == data.test_y.numpy()).mean()
        assert accuracy == pytest.approx(result.value, abs=1e-6)  # the metric training reported

    metadata = {p.key: p.value for p in onnx.load(tmp_path / "m.onnx").metadata_props}
    assert json.loads(metadata["dltk.metric"])["accuracy"] == pytest.approx(result.value)
