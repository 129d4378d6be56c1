"""Winograd 3x3 convolutions against ONNX Runtime: F(4x4) and F(2x2) tiles, the bias, activation and
residual add after them, batches; and the convolutions the rewrite leaves to the direct rule."""

import numpy as np
import onnxruntime as ort
import pytest
from onnx import helper

from tests.toolkit.schedules.conftest import assert_matches_onnxruntime, one_node_model, scheduled_rules, with_relu
from toolkit.schedules import winograd

WINOGRAD_RULES = {"winograd-input", "matmul", "winograd-output"}


def _conv(rng, batch, channels, filters, size, **attrs):
    """Conv (weights scaled to keep the outputs near 1, as trained ones are) + bias + Relu."""
    weight = rng.standard_normal((filters, channels, 3, 3)) / np.sqrt(9 * channels)
    attrs = dict(dict(pads=[1, 1, 1, 1]), **attrs)
    return with_relu(one_node_model("Conv", {"x": [batch, channels, size, size]},
                                    {"w": weight, "b": rng.standard_normal(filters)}, 4, kernel_shape=[3, 3], **attrs))


def _with_residual(model):
    """y = relu(conv(x) + b) + x, a ResNet block's last step (the add fused after the output transform)."""
    graph = model.graph
    graph.node[-1].output[0] = "activated"
    graph.node.append(helper.make_node("Add", ["activated", "x"], ["y"]))
    return model


def _feeds(rng, batch, channels, size):
    return [{"x": rng.standard_normal((batch, channels, size, size)).astype(np.float32)}]


CASES = {
    # name: (batch, in channels, out channels, size, the tile the rewrite picks)
    "28x28, 4x4 tiles": (1, 16, 24, 28, 4),  # 49 tiles of 4x4
    "4x4, 2x2 tiles": (1, 64, 64, 4, 2),  # one tile of 4x4 is too few: 4 of 2x2
    "batch 3 of 4x4, 2x2 tiles": (3, 32, 32, 4, 2),  # 3 tiles of 4x4 over the batch are too few: 12 of 2x2
    # maps no tile divides: the last tiles reach into the zero padding, and only the map is written
    "29x29, 4x4 tiles cut short": (1, 8, 16, 29, 4),
    "batch 2 of 7x7, 4x4 tiles cut short": (2, 16, 32, 7, 4),  # ResNet's last stage: 4 tiles per image
    "batch 4 of 3x3, 4x4 tiles cut short": (4, 64, 64, 3, 4),
    "batch 8 of 2x2, 2x2 tiles": (8, 64, 64, 2, 2),  # 4x4 tiles: as many multiply-adds as the direct one
}


@pytest.mark.parametrize("name", list(CASES))
def test_winograd_matches_onnxruntime(rng, name):
    batch, channels, filters, size, tile = CASES[name]
    assert winograd.tile_size(batch, channels, filters, size, size) == tile
    model = _conv(rng, batch, channels, filters, size)
    assert set(scheduled_rules(model).values()) == WINOGRAD_RULES
    assert_matches_onnxruntime(model, _feeds(rng, batch, channels, size))


def test_the_residual_add_is_fused_after_the_output_transform(rng):
    model = _with_residual(_conv(rng, 1, 16, 16, 28))
    rules = scheduled_rules(model)
    assert set(rules.values()) == WINOGRAD_RULES  # no kernel of its own for the add
    assert any("add" in name and rule == "winograd-output" for name, rule in rules.items()), rules
    assert_matches_onnxruntime(model, _feeds(rng, 1, 16, 28))


@pytest.mark.parametrize("change", [
    dict(batch="batch"),  # a symbolic batch: its static variants get the rewrite, not the symbolic kernel
    dict(strides=[2, 2]),
    dict(dilations=[2, 2], pads=[2, 2, 2, 2]),
    dict(size=4),  # 37K multiply-adds: too few to pay for two more kernel calls
    dict(channels=3),  # RGB in: no vector of channels
])
def test_what_the_rewrite_leaves_to_the_direct_convolution(rng, change):
    change = dict(change)
    batch, channels, size = change.pop("batch", 1), change.pop("channels", 16), change.pop("size", 28)
    model = _conv(rng, batch, channels, 16, size, **change)
    assert "conv2d" in set(scheduled_rules(model).values())


def test_the_tile_needs_enough_tiles_however_much_work():
    assert winograd.tile_size(1, 512, 512, 2, 2) is None  # 9.4M multiply-adds, but one 2x2 tile
    assert winograd.tile_size(1, 512, 512, 4, 4) == 2  # one 4x4 tile is too few, four 2x2 are not
    assert winograd.tile_size(1, 512, 512, 7, 7) == 4  # ResNet-18's last stage at batch 1


def test_the_tile_must_save_enough_multiply_adds():
    assert winograd.tile_size(1, 512, 512, 3, 3) is None  # four 2x2 tiles cut short: 0.79 of the direct work
    assert winograd.tile_size(8, 64, 64, 2, 2) == 2  # 4x4 tiles on a 2x2 map: no saving; 2x2 tiles: 0.44
    assert winograd.tile_size(1, 64, 64, 56, 56) == 4  # 0.25 against 2x2 tiles' 0.44


def test_the_transformed_weights_give_the_direct_convolution_of_one_tile():
    # F(m x m, 3x3) on one (m + 2)^2 window: A^T [(G g G^T) * (B^T d B)] A equals the direct convolution
    rng = np.random.default_rng(0)
    for tile in winograd.TILE_SIZES:
        a, b, g = winograd._matrices(tile)
        window = rng.standard_normal((tile + 2, tile + 2))
        kernel = rng.standard_normal((3, 3))
        u = winograd._transformed_weight(kernel.reshape(1, 1, 3, 3).astype(np.float32), tile).reshape(tile + 2, tile + 2)
        winograd_out = a.T @ (u * (b.T @ window @ b)) @ a
        direct = np.array([[np.sum(window[y:y + 3, x:x + 3] * kernel) for x in range(tile)] for y in range(tile)])
        np.testing.assert_allclose(winograd_out, direct, rtol=1e-5, atol=1e-5)


def test_a_symbolic_batch_model_gets_static_variants_for_winograd_without_records(rng, tmp_path):
    """Winograd needs static shapes: an untuned compile keeps the batch-1 and batch-8 copies of main where
    their convolutions were rewritten, and the artifact serves those batches and any other."""
    import onnx

    from toolkit import runtime, tune
    from toolkit.compile import compile_model

    model = _conv(rng, "batch", 16, 16, 14)
    path = tmp_path / "conv.onnx"
    onnx.save(model, str(path))
    untuned = tune.TuneOptions(shipped=False, db=tmp_path / "no-records")
    report = compile_model(path, tmp_path / "conv.tvm", target="cpu", tuning=untuned, choose_engine=False)
    assert report.artifact.manifest["variants"] == {"1": "main_b1", "8": "main_b8"}
    session = runtime.load(tmp_path / "conv.tvm")
    reference = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 3, 8):  # 3: main, the direct convolution
        feeds = _feeds(rng, batch, 16, 14)[0]
        np.testing.assert_allclose(session.run(feeds)["y"], reference.run(None, feeds)[0], rtol=1e-4, atol=1e-4)

