"""Rewrite three export patterns that make TVM's ONNX importer lose a tensor's symbolic shape.

TVM's Relax importer tracks dims as symbolic expressions (`batch`, `sequence`, `samples // 10 - 1`).
When the two sides of a broadcast carry expressions it cannot prove equal, the result's shape
becomes unknown, and a later Shape -> Gather or a Reshape with a -1 on it fails to import
("shape_of expects a tensor input", "Reshape expects the input tensor to have known shape").
Each rewrite below keeps the same values and gives the importer an expression it can follow:

- `tail slice` (T5's position bias, `bias[:, :, -n:, :]`): Slice(x, -n, INT64_MAX, axis) has a
  start computed at run time, so the importer takes it as in bounds and makes the length
  `INT64_MAX + n`. Rewritten as Slice(x, d - n, d) with d = x's dim, whose length is `n`. Assumes
  n <= d (a suffix no longer than the tensor, as T5 slices its own length; verification checks).
- `scalar reshape` (dynamo exports, `torch.reshape(seq_len + 1, [-1])`): the importer holds a
  0-d value computed from shapes as a PrimValue, which its Reshape refuses as data. A Reshape of
  a 0-d value to [-1] or [1] is an Unsqueeze at axis 0, which the importer takes.
- `trimmed conv` (wav2vec2's positional convolution, `conv(x)[..., :-1]`, "same" padding for an
  even kernel): the importer's length for the Slice is `min(max(L - 1, 0), L)`, not provably
  equal to the residual's `L - 1`. A stride-1 Conv whose only consumer cuts k positions off the end
  of a spatial axis is the same Conv with k less end padding (the first outputs do not depend on
  the last padding), whose length the importer computes exactly.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from toolkit.optimize.dynamic_shapes import ONNX_DOMAINS, _constants, is_shape_scalar

OPEN_END = 2**62  # exporters write an open slice end as INT64_MAX (or INT32_MAX at old opsets)
MIN_OPSET = 13  # Slice, Unsqueeze and Squeeze take their parameters as inputs


def keep_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy with every pattern of the module's docstring rewritten; the model itself when it has none."""
    opset = next((o.version for o in model.opset_import if o.domain in ONNX_DOMAINS), 0)
    if opset < MIN_OPSET:
        return model
    graph = _Graph(model)
    rewritten = [graph.rewrite(index, node) for index, node in enumerate(model.graph.node)]
    if all(r is None for r in rewritten):
        return model
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    nodes = [n for node, r in zip(model.graph.node, rewritten) for n in ([node] if r is None else r)]
    del copy.graph.node[:]
    copy.graph.node.extend(nodes)
    copy.graph.initializer.extend(graph.initializers)
    return copy


class _Graph:
    """What the rewrites need to know of the graph: constants, producers, consumers."""

    def __init__(self, model: onnx.ModelProto):
        self.constants = _constants(model)
        self.producers = {out: n for n in model.graph.node for out in n.output}
        self.consumers: dict[str, int] = {}
        for node in model.graph.node:
            for name in node.input:
                self.consumers[name] = self.consumers.get(name, 0) + 1
        for output in model.graph.output:
            self.consumers[output.name] = self.consumers.get(output.name, 0) + 1
        self.initializers: list[onnx.TensorProto] = []
        self.trims: dict[str, list[int]] = {}  # Conv output -> the pads that make the trimmed output directly
        for node in model.graph.node:
            pads = self._trim_pads(node) if node.op_type == "Slice" and node.domain in ONNX_DOMAINS else None
            if pads is not None:
                self.trims[node.input[0]] = pads

    def rewrite(self, index: int, node: onnx.NodeProto) -> list[onnx.NodeProto] | None:
        """The nodes that replace `node` ([] drops it), or None to keep it as it is."""
        if node.domain not in ONNX_DOMAINS:
            return None
        prefix = f"{node.name or node.op_type}_{index}/"
        if node.op_type == "Reshape":
            return self._scalar_reshape(node, prefix)
        if node.op_type == "Slice":
            return self._tail_slice(node, prefix) or self._trimmed_conv_slice(node)
        if node.op_type == "Conv" and node.output[0] in self.trims:
            return [self._conv_with_pads(node, self.trims[node.output[0]])]
        return None

    # -- scalar reshape --------------------------------------------------------------------------
    def _scalar_reshape(self, node, prefix):
        shape = self.constants.get(node.input[1])
        if shape is None or shape.tolist() not in ([-1], [1]) or not self._is_scalar(node.input[0]):
            return None
        axes = self._constant(prefix + "axes", np.array([0], np.int64))
        return [helper.make_node("Unsqueeze", [node.input[0], axes], list(node.output), name=prefix + "unsqueeze")]

    # -- tail slice ------------------------------------------------------------------------------
    def _tail_slice(self, node, prefix):
        if len(node.input) < 4 or len(node.input) > 4 and not self._is_one(node.input[4]):
            return None
        ends, axes = self.constants.get(node.input[2]), self.constants.get(node.input[3])
        if ends is None or axes is None or ends.size != 1 or axes.size != 1 or int(ends.ravel()[0]) < OPEN_END:
            return None
        length = self._negated_scalar(node.input[1])
        if length is None:
            return None
        data, axis = node.input[0], int(axes.ravel()[0])
        dim, start = prefix + "dim", prefix + "start"
        index = self._constant(prefix + "axis", np.array(axis, np.int64))
        zero = self._constant(prefix + "zero", np.array([0], np.int64))
        return [
            helper.make_node("Shape", [data], [prefix + "shape"], name=prefix + "shape_node"),
            helper.make_node("Gather", [prefix + "shape", index], [dim], name=prefix + "gather_dim", axis=0),
            helper.make_node("Sub", [dim, length], [start], name=prefix + "sub"),
            helper.make_node("Unsqueeze", [start, zero], [prefix + "starts"], name=prefix + "starts_node"),
            helper.make_node("Unsqueeze", [dim, zero], [prefix + "ends"], name=prefix + "ends_node"),
            helper.make_node("Slice", [data, prefix + "starts", prefix + "ends", node.input[3]], list(node.output),
                             name=prefix + "slice"),
        ]

    def _negated_scalar(self, starts: str) -> str | None:
        """n when `starts` is Unsqueeze(Neg(n)) (or Neg(Unsqueeze(n))) of a 0-d n computed from shapes."""
        node = self.producers.get(starts)
        if node is None or node.op_type not in ("Unsqueeze", "Neg"):
            return None
        inner = self.producers.get(node.input[0])
        if inner is None or {node.op_type, inner.op_type} != {"Unsqueeze", "Neg"}:
            return None
        return inner.input[0] if self._is_scalar(inner.input[0]) else None

    # -- trimmed conv ----------------------------------------------------------------------------
    def _trim_pads(self, node) -> list[int] | None:
        conv = self.producers.get(node.input[0])
        if conv is None or conv.op_type != "Conv" or self.consumers.get(conv.output[0]) != 1 or len(node.input) < 4:
            return None
        if len(node.input) > 4 and not self._is_one(node.input[4]):
            return None
        starts, ends, axes = (self.constants.get(name) for name in node.input[1:4])
        if starts is None or ends is None or axes is None or starts.size != 1 or ends.size != 1 or axes.size != 1:
            return None
        attrs = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
        spatial = len(attrs.get("kernel_shape", [])) or None
        cut, axis = -int(ends.ravel()[0]), int(axes.ravel()[0])
        if spatial is None or int(starts.ravel()[0]) != 0 or cut <= 0 or attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            return None
        axis = axis + 2 + spatial if axis < 0 else axis  # Conv output: (N, C, spatial...)
        if not 2 <= axis < 2 + spatial or attrs.get("strides", [1] * spatial)[axis - 2] != 1:
            return None
        pads = list(attrs.get("pads", [0] * 2 * spatial))
        end = spatial + axis - 2  # pads are [begin..., end...]
        if pads[end] < cut:
            return None
        pads[end] -= cut
        return pads

    def _trimmed_conv_slice(self, node):
        if node.input[0] not in self.trims:
            return None
        return [helper.make_node("Identity", [node.input[0]], list(node.output), name=(node.name or "slice") + "/trimmed")]

    @staticmethod
    def _conv_with_pads(conv, pads: list[int]) -> onnx.NodeProto:
        new = onnx.NodeProto()
        new.CopyFrom(conv)
        for attribute in new.attribute:
            if attribute.name == "pads":
                del attribute.ints[:]
                attribute.ints.extend(pads)
                return new
        new.attribute.append(helper.make_attribute("pads", pads))
        return new

    # -- helpers ---------------------------------------------------------------------------------
    def _is_scalar(self, name: str) -> bool:
        return is_shape_scalar(name, self.producers, self.constants)

    def _is_one(self, name: str) -> bool:
        value = self.constants.get(name)
        return value is not None and value.size == 1 and int(value.ravel()[0]) == 1

    def _constant(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(value, name))
        return name
