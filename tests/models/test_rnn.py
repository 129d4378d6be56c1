"""The recurrent zoo: what each model maps a digit to, and which cells its export holds.

The pipeline and its parity with PyTorch at batch 1, 3 and 8 are tests/models/test_zoo.py's.
"""

import onnx
import pytest

import models
from toolkit.export import export_model

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
def test_recurrent_export_keeps_the_cells_dltk_lowers_before_tvm(name, tmp_path, monkeypatch):
    """The export's ops; compile and parity with PyTorch at batch 1, 3 and 8 are tests/models/test_zoo.py's."""
    monkeypatch.setitem(models.REGISTRY, name, models.get(name).test_size())
    export_model(name, tmp_path / "m.onnx")
    ops = [n.op_type for n in onnx.load(tmp_path / "m.onnx").graph.node]
    if EXPORTED_AS[name]:
        assert EXPORTED_AS[name] in ops
    else:
        assert not {"RNN", "Scan", "Loop"} & set(ops) and "Tanh" in ops
