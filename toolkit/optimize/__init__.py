"""ONNX graph rewrites that run before import into TVM."""

from __future__ import annotations

import onnx

from toolkit.optimize.rnn import lower_recurrent, sequence_length_limits

__all__ = ["for_tvm", "lower_recurrent", "sequence_length_limits"]


def for_tvm(model: onnx.ModelProto) -> onnx.ModelProto:
    """The graph rewritten into ops TVM's ONNX importer converts; `model` itself when nothing needs it."""
    return lower_recurrent(model)
