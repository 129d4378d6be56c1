"""Rewrite 1-D convolutions as 2-D ones of height 1, so that dltk's Conv2d schedule applies.

TVM lowers a Conv1d to a kernel no dltk schedule rule matches as a convolution (toolkit/schedules
covers NCHW Conv2d): wav2vec2's grouped positional convolution and its feature extractor's
strided ones over raw audio ran as TVM's default code, 40% of the model's time at 1,600 samples.
Each 1-D Conv (a 3-D input) becomes

    Unsqueeze(x, 2) -> Conv(kernel 1 x K, strides 1 x s, dilations 1 x d, pads 0,b,0,e) -> Squeeze(2)

with its weight (F, C/groups, K) stored as (F, C/groups, 1, K); groups, bias and auto_pad carry
over unchanged (a height of 1 with a 1-high kernel needs no padding). A weight computed in the
graph, rather than stored, is unsqueezed by a node of its own.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from toolkit.optimize.dynamic_shapes import ONNX_DOMAINS

MIN_OPSET = 11  # Conv's pads and auto_pad as today; Unsqueeze's axes moved to an input at 13


def conv1d_as_conv2d(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy with each 1-D Conv made a 2-D one of height 1; the model itself when it has none."""
    opset = next((o.version for o in model.opset_import if o.domain in ONNX_DOMAINS), 0)
    initializers = {t.name: t for t in model.graph.initializer}
    convs = [i for i, n in enumerate(model.graph.node) if _is_conv1d(n, initializers)]
    if opset < MIN_OPSET or not convs:
        return model
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    del rewritten.graph.node[:]
    added: list[onnx.TensorProto] = []
    replaced_weights: dict[str, str] = {}
    for index, node in enumerate(model.graph.node):
        if index in convs:
            rewritten.graph.node.extend(_as_conv2d(node, index, opset, initializers, added, replaced_weights))
        else:
            rewritten.graph.node.append(node)
    # a replaced weight goes unless still read; one listed as a graph input too (IR 3) stays, else it would become an input
    used = {name for n in rewritten.graph.node for name in n.input} | {v.name for v in [*model.graph.output, *model.graph.input]}
    kept = [t for t in model.graph.initializer if t.name not in replaced_weights or t.name in used]
    del rewritten.graph.initializer[:]
    rewritten.graph.initializer.extend([*kept, *added])
    return rewritten


def _is_conv1d(node: onnx.NodeProto, initializers: dict) -> bool:
    if node.op_type != "Conv" or node.domain not in ONNX_DOMAINS:
        return False
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if "kernel_shape" in attrs:
        return len(attrs["kernel_shape"]) == 1
    weight = initializers.get(node.input[1])
    return weight is not None and len(weight.dims) == 3


def _as_conv2d(node, index: int, opset: int, initializers: dict, added: list, replaced_weights: dict) -> list:
    prefix = f"{node.name or 'conv'}_{index}/as_conv2d/"
    nodes = []
    axis = None
    if opset >= 13:  # Unsqueeze and Squeeze take their axes as an input
        axis = prefix + "axis"
        added.append(numpy_helper.from_array(np.array([2], np.int64), axis))

    def unsqueeze(source: str, result: str) -> None:
        inputs, attrs = ([source, axis], {}) if axis else ([source], {"axes": [2]})
        nodes.append(helper.make_node("Unsqueeze", inputs, [result], name=result, **attrs))

    image = prefix + "input"
    unsqueeze(node.input[0], image)
    weight = node.input[1]
    if weight in replaced_weights:  # a weight shared by several convolutions is reshaped once
        weight = replaced_weights[weight]
    elif weight in initializers:
        array = numpy_helper.to_array(initializers[weight])
        replaced_weights[weight] = prefix + "weight"
        weight = prefix + "weight"
        added.append(numpy_helper.from_array(array[:, :, None, :], weight))
    else:
        unsqueeze(weight, prefix + "weight")
        weight = prefix + "weight"
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    for name in ("kernel_shape", "strides", "dilations"):
        if name in attrs:
            attrs[name] = [1, *attrs[name]]
    if "pads" in attrs:
        begin, end = attrs["pads"]
        attrs["pads"] = [0, begin, 0, end]
    result = prefix + "output"
    nodes.append(helper.make_node("Conv", [image, weight, *node.input[2:]], [result], name=node.name + "/2d", **attrs))
    inputs, squeeze_attrs = ([result, axis], {}) if axis else ([result], {"axes": [2]})
    nodes.append(helper.make_node("Squeeze", inputs, [node.output[0]], name=prefix + "squeeze", **squeeze_attrs))
    return nodes
