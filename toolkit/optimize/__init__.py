"""ONNX graph rewrites: before import into TVM (for_tvm), and attention fused for ONNX Runtime's int8 kernels."""

from __future__ import annotations

import onnx

from toolkit.optimize.attention import fuse_attention
from toolkit.optimize.conv1d import conv1d_as_conv2d
from toolkit.optimize.dynamic_shapes import rewrite_ranges
from toolkit.optimize.global_pool import whole_input_pools
from toolkit.optimize.rnn import GATES, lower_recurrent, sequence_length_limits
from toolkit.optimize.rnn_kernel import converters
from toolkit.optimize.shape_tracking import keep_shapes

__all__ = ["LOWERED_OPS", "conv1d_as_conv2d", "converters", "for_tvm", "fuse_attention", "keep_shapes", "lower_recurrent", "rewrite_ranges",
           "sequence_length_limits", "whole_input_pools"]

LOWERED_OPS = frozenset(GATES)  # ops for_tvm replaces, so TVM's importer never sees them


def for_tvm(model: onnx.ModelProto, cpu: bool = True) -> onnx.ModelProto:
    """The graph rewritten into ops TVM's ONNX importer converts (with `converters()` on CPUs,
    where recurrent nodes become whole-sequence kernels, and 1-D convolutions 2-D ones that dltk's
    Conv2d schedule takes); `model` itself when nothing needs it."""
    model = whole_input_pools(lower_recurrent(rewrite_ranges(keep_shapes(model)), kernels=cpu))
    return conv1d_as_conv2d(model) if cpu else model
