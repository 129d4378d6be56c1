"""The conv-transpose rule: GAN-style transposed convolutions against ONNX Runtime, output channels
that do and do not fill the vector tile, a symbolic batch run at 1 and 3."""

import numpy as np
import pytest

from tests.toolkit.schedules.conftest import assert_matches_onnxruntime, one_node_model, scheduled_rules, with_relu


def _x(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize(
    "c_in,c_out,size,kernel,stride,pad",
    [(16, 16, 2, 4, 2, 1), (6, 5, 3, 3, 1, 0), (8, 1, 4, 4, 2, 1)],  # a full tile; odd channels; one output channel (GAN's last)
)
def test_conv_transpose_matches_onnxruntime_at_batch_1_and_3(rng, c_in, c_out, size, kernel, stride, pad):
    model = with_relu(one_node_model(
        "ConvTranspose", {"x": ["batch", c_in, size, size]},
        {"w": _x(rng, c_in, c_out, kernel, kernel), "b": _x(rng, c_out)}, 4,
        strides=[stride, stride], pads=[pad] * 4,
    ))
    assert "conv-transpose" in scheduled_rules(model).values()
    assert_matches_onnxruntime(model, [{"x": _x(rng, b, c_in, size, size)} for b in (1, 3)])
