"""The recurrent zoo: train a few steps -> export -> compile -> run; ONNX Runtime and TVM agree with PyTorch."""

import numpy as np
import onnx
import pytest
import torch

import models
from toolkit import runtime
from toolkit.compile import compile_model
from toolkit.export import export_model
from toolkit.train import load_model, train_model

# What the dynamo exporter (dltk export) makes of each cell: LSTM and GRU nodes, which dltk lowers
# before TVM; nn.RNN arrives already unrolled into MatMul/Add/Tanh per step.
EXPORTED_AS = {"lstm": "LSTM", "gru": "GRU", "rnn": None}


@pytest.mark.parametrize("name", EXPORTED_AS)
def test_recurrent_model_maps_rows_of_digits_to_class_logits(name):
    spec = models.get(name)
    (x,) = spec.sample(5)
    assert spec.family == "recurrent" and x.shape == (5, 1, 8, 8)
    assert spec.create(seed=0)(x).shape == (5, 10)


@pytest.mark.parametrize("name", EXPORTED_AS)
def test_recurrent_pipeline_agrees_with_pytorch_at_any_batch(name, tmp_path):
    train_model(name, tmp_path / "m.pt", epochs=1)
    export_model(str(tmp_path / "m.pt"), tmp_path / "m.onnx")
    ops = [n.op_type for n in onnx.load(tmp_path / "m.onnx").graph.node]
    if EXPORTED_AS[name]:
        assert EXPORTED_AS[name] in ops
    else:
        assert not {"RNN", "Scan", "Loop"} & set(ops) and "Tanh" in ops
    compile_model(tmp_path / "m.onnx", tmp_path / "m.tvm")

    module = load_model(str(tmp_path / "m.pt")).module
    sessions = (runtime.load(tmp_path / "m.onnx"), runtime.load(tmp_path / "m.tvm"))
    for batch in (1, 3, 8):
        (x,) = models.get(name).sample(batch)
        with torch.no_grad():
            expected = module(x).numpy()
        for session in sessions:
            got = session.run({"input": x.numpy()})["logits"]
            np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-3, err_msg=f"{session} batch {batch}")
