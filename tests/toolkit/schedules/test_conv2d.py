"""The conv2d rule against ONNX Runtime: plain, strided and padded, 1x1, grouped and depthwise
convolutions, channel counts and widths that do and do not divide the tiles, batch 1 and 3."""

import numpy as np
import pytest

from tests.toolkit.schedules.conftest import (
    assert_matches_onnxruntime,
    one_node_model,
    scheduled_rules,
    scheduled_scripts,
    with_relu,
)


def _x(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


CASES = {
    # name: (in channels, out channels, size, kernel, Conv attributes)
    "3x3 padded": (3, 16, 9, 3, dict(pads=[1, 1, 1, 1])),
    "strided odd": (5, 20, 11, 3, dict(pads=[1, 1, 1, 1], strides=[2, 2])),
    "1x1": (8, 24, 7, 1, {}),
    "grouped": (8, 16, 6, 3, dict(group=2, pads=[1, 1, 1, 1])),
    "depthwise": (8, 8, 10, 3, dict(group=8, pads=[1, 1, 1, 1])),
    # groups of channels no vector divides (ShuffleNet's 68 per group): rows of 7 columns, tiles inside a group
    "grouped 1x1, 6 per group": (12, 24, 14, 1, dict(group=4)),
    "grouped 3x3, 12 per group, odd width": (8, 24, 11, 3, dict(group=2, pads=[1, 1, 1, 1])),
    "grouped 7x7 map, 12 per group": (16, 48, 7, 1, dict(group=4)),  # too narrow for rows: channel tiles of 4
    "5x5 six channels": (1, 6, 12, 5, {}),  # LeNet's first layer
    # fewer output channels than a vector: vectorized along the row, 10 wide (not a whole vector)
    "one output channel": (4, 1, 10, 3, dict(pads=[1, 1, 1, 1])),
    "7x7 late layer": (8, 16, 7, 3, dict(pads=[1, 1, 1, 1])),  # one vector of channels x a row of 7
    "2x2 late layer": (16, 32, 2, 3, dict(pads=[1, 1, 1, 1])),  # rows x columns in one register block
    "7x7 kernel stride 2": (3, 8, 11, 7, dict(pads=[3, 3, 3, 3], strides=[2, 2])),  # ResNet's stem
    "13x13, a prime width": (16, 32, 13, 3, dict(pads=[1, 1, 1, 1])),  # tiles of 5 columns, the last cut short
    # more input than weights (ResNet's 56x56 layers): rows in parallel, each row's padded window its own
    "34x34, rows outermost": (16, 16, 34, 3, dict(pads=[1, 1, 1, 1])),
    "16x16, the batch among the parallel tiles": (32, 32, 16, 3, dict(pads=[1, 1, 1, 1])),  # VGG's maps
}


@pytest.mark.parametrize("name", list(CASES))
def test_conv2d_with_bias_and_relu_matches_onnxruntime_at_batch_1_and_3(rng, name):
    channels, filters, size, kernel, attrs = CASES[name]
    group = attrs.get("group", 1)
    model = with_relu(one_node_model(
        "Conv", {"x": ["batch", channels, size, size]},
        {"w": _x(rng, filters, channels // group, kernel, kernel), "b": _x(rng, filters)}, 4,
        kernel_shape=[kernel, kernel], **attrs,
    ))
    rules = set(scheduled_rules(model).values())
    assert rules & {"conv2d", "matmul"}, rules  # a 1x1 convolution is a matmul to the rules
    assert_matches_onnxruntime(model, [{"x": _x(rng, b, channels, size, size)} for b in (1, 3)])


def test_resnet_sized_conv_runs_on_both_cores_with_packed_weights(rng):
    # stride 2, a ResNet stage's first convolution (stride 1 would be Winograd's: test_winograd.py)
    model = one_node_model("Conv", {"x": [1, 32, 28, 28]}, {"w": _x(rng, 64, 32, 3, 3)}, 4,
                           kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2])
    assert set(scheduled_rules(model).values()) >= {"conv2d"}
    script = scheduled_scripts(model)
    assert "T.parallel" in script and "T.vectorized" in script and "layout_rewrite_preproc" in script
    assert_matches_onnxruntime(model, [{"x": _x(rng, 1, 32, 28, 28)}])


def test_a_prime_width_gets_a_full_tile_of_columns_not_one_pixel():
    import tvm

    from toolkit.schedules import conv2d

    avx2 = tvm.target.Target({"kind": "llvm", "mcpu": "znver3", "num-cores": 2})
    # 13 = 5 + 5 + 3: two vectors of channels x 5 columns, the last tile predicated
    assert conv2d._register_tile(avx2, 8, 32, 13, 13, 32) == (16, 1, 5)
    assert conv2d._register_tile(avx2, 8, 32, 14, 14, 32) == (16, 2, 2)  # 14 divides: no tail
    assert conv2d._register_tile(avx2, 8, 32, 7, 7, 32) == (8, 1, 7)  # 7 divides for one vector: no tail


def test_rows_go_outermost_where_the_input_outweighs_the_weights():
    from toolkit.schedules import conv2d

    # (output channels, rows, columns, input channels, kernel rows, kernel columns), padded input
    # rows x columns, rows per tile, cores
    assert conv2d._rows_first((64, 56, 56, 64, 3, 3), 58 * 58, 1, 2)  # ResNet-18's 56x56 layers
    assert conv2d._rows_first((64, 112, 112, 3, 7, 7), 230 * 230, 1, 2)  # its stem
    assert conv2d._rows_first((128, 28, 28, 64, 3, 3), 58 * 58, 1, 2)  # 56 -> 28 at stride 2: 4x the input
    assert conv2d._rows_first((16, 34, 34, 16, 3, 3), 36 * 36, 2, 2)  # the "34x34, rows outermost" case above
    assert not conv2d._rows_first((512, 7, 7, 512, 3, 3), 9 * 9, 1, 2)  # weights outweigh the input
    assert not conv2d._rows_first((128, 28, 28, 128, 3, 3), 30 * 30, 1, 2)
    assert not conv2d._rows_first((64, 56, 56, 64, 3, 3), 58 * 58, 1, 16)  # too few rows for 16 cores


SYMBOLIC_WIDTH = {
    # name: (in channels, out channels, height, kernel (h, w), Conv attributes, input widths); the width is
    # symbolic: one row of columns per tile, the last tile predicated (wav2vec2's convolutions, made 2-D of
    # height 1). The input widths give output widths that are a multiple of the tile, off it, and under one tile.
    "grouped, padded, height 1": (32, 32, 1, (1, 8), dict(group=2, pads=[0, 4, 0, 4]), (47, 49, 2)),  # 6 columns
    "strided, one input channel": (1, 16, 1, (1, 10), dict(strides=[1, 5]), (65, 70, 15)),  # 6 columns
    "3x3 over rows, dilated": (4, 8, 5, (3, 3), dict(dilations=[1, 2], pads=[0, 1, 0, 1]), (16, 17, 5)),  # 7 columns
}


@pytest.mark.parametrize("name", list(SYMBOLIC_WIDTH))
def test_conv2d_with_a_symbolic_width_matches_onnxruntime_at_lengths_in_and_off_the_tile(rng, name):
    channels, filters, height, (kh, kw), attrs, widths = SYMBOLIC_WIDTH[name]
    group = attrs.get("group", 1)
    model = with_relu(one_node_model(
        "Conv", {"x": ["batch", channels, height, "width"]},
        {"w": _x(rng, filters, channels // group, kh, kw), "b": _x(rng, filters)}, 4,
        kernel_shape=[kh, kw], **attrs,
    ))
    assert "conv2d" in set(scheduled_rules(model).values())
    assert_matches_onnxruntime(model, [{"x": _x(rng, b, channels, height, w)} for b, w in zip((1, 3, 1), widths)])


def test_a_symbolic_width_gets_a_predicated_row_of_columns():
    import tvm

    from toolkit.schedules import conv2d

    avx2 = tvm.target.Target({"kind": "llvm", "mcpu": "znver3", "num-cores": 2})
    assert conv2d._register_tile(avx2, 8, 32, 1, 0, 16) == (16, 1, 6)  # two vectors of a group's 16 channels x 6 columns
    assert conv2d._register_tile(avx2, 8, 8, 1, 0, 8) == (8, 1, 7)  # one vector x 7 columns
