"""The matmul rule: dense, Gemm and batch-matmul kernels against ONNX Runtime, tiles that do and
do not divide the shapes, a symbolic batch run at 1 and 3."""

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


@pytest.mark.parametrize(
    "in_features,out_features",
    [(64, 128), (37, 19), (16, 10)],  # divides the 2-vector tile; odd both ways; a narrow output
)
def test_dense_with_bias_and_relu_matches_onnxruntime_at_batch_1_and_3(rng, in_features, out_features):
    model = with_relu(one_node_model(
        "Gemm", {"x": ["batch", in_features]},
        {"w": _x(rng, out_features, in_features), "b": _x(rng, out_features)}, 2, transB=1,
    ))
    assert "matmul" in scheduled_rules(model).values()
    assert_matches_onnxruntime(model, [{"x": _x(rng, b, in_features)} for b in (1, 3)])


def test_transformer_projection_is_parallel_vectorized_and_matches(rng):
    # GPT's (B, T, C) x (C, 4C): large enough to run on both cores
    model = one_node_model("MatMul", {"x": ["batch", 33, 96]}, {"w": _x(rng, 96, 384)}, 3)
    script = scheduled_scripts(model)
    assert "T.parallel" in script and "T.vectorized" in script
    assert "meta_schedule.layout_rewrite_preproc" in script  # the weight is pre-packed
    assert_matches_onnxruntime(model, [{"x": _x(rng, b, 33, 96)} for b in (1, 3)])


def test_batch_matmul_of_two_activations_matches(rng):
    # attention's Q @ K^T shape: both operands computed, nothing to pre-pack; odd sizes
    model = one_node_model("MatMul", {"q": [3, 7, 9], "k": [3, 9, 13]}, {}, 3)
    assert set(scheduled_rules(model).values()) == {"matmul"}
    assert_matches_onnxruntime(model, [{"q": _x(rng, 3, 7, 9), "k": _x(rng, 3, 9, 13)}])


def test_single_row_gemv_matches(rng):
    # a static batch of 1 (a tuned batch-1 variant): no row axis left, the rule tiles columns only
    model = one_node_model("Gemm", {"x": [1, 50]}, {"w": _x(rng, 50, 40), "b": _x(rng, 40)}, 2)
    assert "matmul" in scheduled_rules(model).values()
    assert_matches_onnxruntime(model, [{"x": _x(rng, 1, 50)}])


@pytest.mark.parametrize("head", [9, 20])  # K unrolled under the keys (up to UNROLLED_K), or outside them
def test_attention_scores_with_a_symbolic_key_length_match(rng, head):
    # GPT's Q @ K^T over a symbolic sequence: the columns (keys) have no static extent to split into
    # vectors; lengths below, at and past a vector's width, with a fused epilogue
    model = with_relu(one_node_model("MatMul", {"q": ["batch", 2, "seq", head], "k": ["batch", 2, head, "seq"]}, {}, 4))
    assert set(scheduled_rules(model).values()) == {"matmul"}
    assert_matches_onnxruntime(model, [{"q": _x(rng, b, 2, t, head), "k": _x(rng, b, 2, head, t)}
                                       for b, t in ((1, 1), (2, 8), (3, 13))])


@pytest.mark.parametrize("in_features,out_features", [(48, 64), (37, 19), (256, 1024)])  # the last runs in parallel
def test_batch_by_tokens_rows_are_padded_to_the_tile_and_match(rng, in_features, out_features):
    # GPT's (batch, tokens, C) x (C, 4C), both leading axes symbolic: the token axis is padded to the
    # register tile; token counts below, at and past it must write exactly their own rows
    model = with_relu(one_node_model("MatMul", {"x": ["batch", "seq", in_features]},
                                     {"w": _x(rng, in_features, out_features)}, 3))
    script = scheduled_scripts(model)
    assert "pad" in script and "T.vectorized" in script
    assert script.count("< seq") >= 2  # the zero padding's read, and the write-back's bound on the rows
    assert_matches_onnxruntime(model, [{"x": _x(rng, b, t, in_features)} for b, t in ((1, 1), (2, 13), (3, 8))])


@pytest.mark.parametrize("filters,size", [(24, 13), (24, 17), (16, 15)])
def test_1x1_convolutions_tile_their_rows_and_match(rng, filters, size):
    # one vector of channels x 13 rows; x 9 rows, the last tile cut short; two vectors x 5 rows
    # a static batch, as SqueezeNet's, and enough work to run in parallel (else the conv2d rule takes it)
    model = with_relu(one_node_model("Conv", {"x": [2, 64, size, size]},
                                     {"w": _x(rng, filters, 64, 1, 1), "b": _x(rng, filters)}, 4, kernel_shape=[1, 1],
                                     pads=[0, 0, 0, 0], strides=[1, 1]))
    assert "matmul" in scheduled_rules(model).values()
    assert_matches_onnxruntime(model, [{"x": _x(rng, 2, 64, size, size)}])


def test_register_tile_rows():
    import tvm

    from toolkit.schedules import matmul

    avx2 = tvm.target.Target({"kind": "llvm", "mcpu": "znver3", "num-cores": 2})
    # (columns J, rows I) -> (rows, columns): SqueezeNet's classifier, a prime past 13, its 55x55 maps
    assert matmul._register_tile(avx2, 8, 1000, 13) == (13, 8)
    assert matmul._register_tile(avx2, 8, 24, 17) == (9, 8)
    assert matmul._register_tile(avx2, 8, 64, 55) == (5, 16)
    assert matmul._register_tile(avx2, 8, 64, 56) == (4, 16)  # 4 divides: as before
    assert matmul._register_tile(avx2, 8, 128, 27) == (3, 16)  # 3 divides; 6 would leave a tail
    assert matmul._register_tile(avx2, 8, 1000, 1) == (1, 8)  # a GEMV
