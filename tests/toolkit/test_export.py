import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import models
from toolkit.errors import CheckFailed, DltkError
from toolkit.export import export_model
from toolkit.runtime.model_source import read_metadata


def test_export_has_dynamic_batch_metadata_and_matches_torch(lenet_checkpoint, lenet_onnx):
    model = onnx.load(lenet_onnx)
    onnx.checker.check_model(model, full_check=True)
    (inp,), (out,) = model.graph.input, model.graph.output
    assert (inp.name, out.name) == ("input", "logits")
    assert inp.type.tensor_type.shape.dim[0].dim_param == "batch"
    meta = read_metadata(model)
    assert meta["dltk.model"] == "lenet"
    assert meta["dltk.dataset"] == models.get("lenet").dataset
    assert set(json.loads(meta["dltk.metric"])) == {"accuracy"}
    assert json.loads(meta["dltk.versions"])["torch"].startswith("2.13")

    # Any batch size runs, and agrees with the checkpoint in PyTorch.
    spec = models.get("lenet")
    torch_model = spec.create()
    torch_model.load_state_dict(torch.load(lenet_checkpoint, weights_only=True)["state_dict"])
    session = ort.InferenceSession(str(lenet_onnx))
    for batch in (1, 3, 8):
        (x,) = spec.sample(batch)
        got = session.run(None, {"input": x.numpy()})[0]
        np.testing.assert_allclose(got, torch_model(x).detach().numpy(), atol=1e-4, rtol=1e-3)


def test_export_reports_parity(tmp_path):
    report = export_model("mlp", tmp_path / "mlp.onnx")
    assert report.parity.passed and not report.trained
    assert report.parity.max_abs < 1e-4
    assert report.inputs[0].shape == ("batch", 64)


def test_static_batch_is_fixed_in_the_graph(tmp_path):
    report = export_model("mlp", tmp_path / "mlp4.onnx", batch=4)
    assert report.inputs[0].shape == (4, 64)


class _ExportsDifferently(torch.nn.Module):
    """Adds 1 only while being exported: ONNX Runtime must then disagree with PyTorch."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(64, 10)

    def forward(self, x):
        y = self.linear(x)
        return y + 1 if torch.compiler.is_exporting() else y


def test_parity_failure_exits_1_and_writes_nothing(tmp_path, monkeypatch):
    spec = models.get("mlp")
    monkeypatch.setitem(models.REGISTRY, "mlp", _replace(spec, build=_ExportsDifferently))
    output = tmp_path / "bad.onnx"
    with pytest.raises(CheckFailed, match="onnxruntime vs torch: DIFFER.*not written") as info:
        export_model("mlp", output)
    assert info.value.exit_code == 1
    assert not output.exists() and list(tmp_path.iterdir()) == []


def _replace(spec, **changes):
    import dataclasses

    return dataclasses.replace(spec, **changes)


def test_unknown_model_and_missing_checkpoint_are_usage_errors(tmp_path):
    with pytest.raises(DltkError, match="unknown model 'resnet1000'") as info:
        export_model("resnet1000", tmp_path / "x.onnx")
    assert info.value.exit_code == 2
    with pytest.raises(DltkError, match="no such file: .*missing.pt"):
        export_model(str(tmp_path / "missing.pt"), tmp_path / "x.onnx")


def test_checkpoint_of_another_model_or_shape_is_refused_in_full(tmp_path):
    from models import checkpoint

    path = tmp_path / "x.pt"
    checkpoint.save(path, "lenet", models.get("mlp").create(0), {})  # says lenet, holds an MLP
    with pytest.raises(DltkError, match="does not hold weights for lenet: .*Missing key.*Unexpected key") as e:
        export_model(str(path), tmp_path / "x.onnx")
    assert "\n" not in str(e.value) and "dltk train lenet" in str(e.value)
    lenet = models.get("lenet").create(0)
    state = lenet.state_dict()
    name = next(iter(state))
    torch.save({"format": checkpoint.FORMAT, "model": "lenet", "info": {},
                "state_dict": {**state, name: torch.zeros(3, *state[name].shape)}}, path)
    with pytest.raises(DltkError, match=f"size mismatch for {name}"):
        export_model(str(path), tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()
