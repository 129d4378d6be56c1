"""The row-reduction rule against ONNX Runtime: softmax, layer norm and global average pooling,
rows that do and do not divide the vector width, a symbolic batch run at 1 and 3."""

import numpy as np
import pytest

from tests.toolkit.schedules.conftest import assert_matches_onnxruntime, one_node_model, scheduled_rules, scheduled_scripts


def _x(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("width", [64, 13])
def test_softmax_matches_onnxruntime(rng, width):
    model = one_node_model("Softmax", {"x": ["batch", 4, 5, width]}, {}, 4, axis=-1)
    assert "row-reduction" in scheduled_rules(model).values()
    assert_matches_onnxruntime(model, [{"x": _x(rng, b, 4, 5, width)} for b in (1, 3)])


@pytest.mark.parametrize("width", [128, 37])
def test_layer_norm_matches_onnxruntime(rng, width):
    model = one_node_model("LayerNormalization", {"x": ["batch", 6, width]},
                           {"scale": _x(rng, width), "bias": _x(rng, width)}, 3, axis=-1)
    assert "row-reduction" in scheduled_rules(model).values()
    assert_matches_onnxruntime(model, [{"x": _x(rng, b, 6, width)} for b in (1, 3)])


def test_large_softmax_runs_on_both_cores_and_matches(rng):
    model = one_node_model("Softmax", {"x": [2, 4, 128, 128]}, {}, 4, axis=-1)
    script = scheduled_scripts(model)
    assert "T.parallel" in script and "T.vectorized" in script
    assert_matches_onnxruntime(model, [{"x": _x(rng, 2, 4, 128, 128)}])


def test_global_average_pool_matches_onnxruntime(rng):
    model = one_node_model("GlobalAveragePool", {"x": ["batch", 12, 7, 7]}, {}, 4)
    assert "row-reduction" in scheduled_rules(model).values()
    assert_matches_onnxruntime(model, [{"x": _x(rng, b, 12, 7, 7)} for b in (1, 3)])


def test_softmax_over_a_symbolic_row_matches_onnxruntime(rng):
    # attention's softmax over the keys: a row length known only at run time, below and past a vector
    model = one_node_model("Softmax", {"x": ["batch", 2, "seq", "seq"]}, {}, 4, axis=-1)
    assert "row-reduction" in scheduled_rules(model).values()
    assert_matches_onnxruntime(model, [{"x": _x(rng, b, 2, t, t)} for b, t in ((1, 1), (2, 13))])
