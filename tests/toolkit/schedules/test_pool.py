"""The pooling rule against ONNX Runtime: max and average pools, strided, padded and overlapping
windows, rows that do and do not fill a vector, batch 1 and 3; global pooling is left to the row reduction."""

import numpy as np
import pytest

from tests.toolkit.schedules.conftest import assert_matches_onnxruntime, one_node_model, scheduled_rules, with_relu

CASES = {
    # name: (op, channels, size, attributes)
    "max 2x2 stride 2": ("MaxPool", 16, 8, dict(kernel_shape=[2, 2], strides=[2, 2])),  # LeNet's
    "max 3x3 stride 2 padded odd": ("MaxPool", 5, 11, dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
    "max 3x3 wide row, parallel": ("MaxPool", 5, 40, dict(kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1])),
    "average 2x2 stride 2": ("AveragePool", 6, 10, dict(kernel_shape=[2, 2], strides=[2, 2])),
    "average 3x3 padded": ("AveragePool", 4, 9, dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
}


@pytest.mark.parametrize("name", list(CASES))
def test_pool_with_relu_matches_onnxruntime_at_batch_1_and_3(rng, name):
    op, channels, size, attrs = CASES[name]
    model = with_relu(one_node_model(op, {"x": ["batch", channels, size, size]}, {}, 4, **attrs))
    assert "pool2d" in scheduled_rules(model).values()
    assert_matches_onnxruntime(model, [{"x": rng.standard_normal((b, channels, size, size)).astype(np.float32)}
                                       for b in (1, 3)])


def test_global_average_pool_is_a_row_reduction_not_a_window(rng):
    model = one_node_model("GlobalAveragePool", {"x": ["batch", 8, 5, 5]}, {}, 4)
    rules = set(scheduled_rules(model).values())
    assert "pool2d" not in rules and "row-reduction" in rules
    assert_matches_onnxruntime(model, [{"x": rng.standard_normal((2, 8, 5, 5)).astype(np.float32)}])
