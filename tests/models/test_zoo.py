"""Every zoo family at test size: train one epoch -> export -> compile -> run at batch 1, 3 and 8
through one artifact, with ONNX Runtime and TVM matching PyTorch."""

import dataclasses
import json

import numpy as np
import onnx
import pytest
import torch

import models
from toolkit import runtime
from toolkit.compile import compile_model
from toolkit.export import export_model
from toolkit.parity import ATOL, RTOL
from toolkit.train import load_model, train_model

BATCHES = (1, 3, 8)
TRAIN_STEPS = 3  # per epoch: enough to move every weight, BatchNorm statistics included


@pytest.fixture
def tiny_zoo(monkeypatch):
    """Registers each family at its test size under its own name, so the toolkit finds it by name."""
    for name, spec in list(models.REGISTRY.items()):
        tiny = spec.test_size()
        recipe = dataclasses.replace(tiny.recipe, max_steps=TRAIN_STEPS)
        monkeypatch.setitem(models.REGISTRY, name, dataclasses.replace(tiny, recipe=recipe))


@pytest.mark.parametrize("name", list(models.REGISTRY))
def test_family_trains_exports_compiles_and_runs_with_parity(name, tmp_path, tiny_zoo):
    spec = models.get(name)
    result = train_model(name, tmp_path / "m.pt", epochs=1)
    assert result.metric == spec.metric and np.isfinite(result.value)
    export_model(str(tmp_path / "m.pt"), tmp_path / "m.onnx")
    # No engine choice: this test is about parity, and the choice's timing runs would only add time.
    report = compile_model(tmp_path / "m.onnx", tmp_path / "m.tvm", choose_engine=False)
    assert report.verification and all(c.passed for c in report.verification)

    manifest = report.artifact.manifest
    for entry, dims in zip(manifest["inputs"], spec.dynamic_dims()):
        assert all(entry["shape"][d] == "batch" for d in dims), entry  # one artifact for every batch size
    metadata = {p.key: p.value for p in onnx.load(tmp_path / "m.onnx").metadata_props}
    assert json.loads(metadata["dltk.metric"]) == {result.metric: pytest.approx(result.value)}

    module = load_model(str(tmp_path / "m.pt")).module
    sessions = [runtime.load(tmp_path / "m.onnx"), runtime.load(tmp_path / "m.tvm", backend="tvm")]
    for batch in BATCHES:
        sample = spec.sample(batch)
        with torch.no_grad():
            expected = module(*sample)
        expected = expected if isinstance(expected, tuple) else (expected,)
        feeds = {n: x.numpy() for n, x in zip(spec.input_names, sample)}
        for session in sessions:
            got = session.run(feeds)
            for output, want in zip(spec.output_names, expected):
                assert got[output].shape[0] == batch
                np.testing.assert_allclose(got[output], want.numpy(), atol=ATOL, rtol=RTOL,
                                           err_msg=f"{name} {session.backend} batch {batch} {output}")
