"""Rewrite ONNX shape arithmetic TVM's importer loses track of, so dynamic sequence lengths compile.

Exporters write `torch.arange(x.size(1))` as `Range(0, Squeeze(Shape(x)[1:2]), 1)` (or with a
Gather from the Shape). TVM's Range converter turns a limit known only at run time into a fresh
symbolic length, unrelated to x's own dimension, so what follows (position embeddings added to
the token embeddings) has a shape TVM cannot prove, and its lowering stops ("CodeGenVM cannot
emit this Relax operator"). Rewritten as the row sums of a strictly lower triangle of ones,
`ReduceSum(Trilu(ConstantOfShape([n, n], 1), -1), axis 1)` with n read by a Shape of x, the
importer keeps the length symbolic and equal to x's: ConstantOfShape takes its shape straight
from the Shape, whose values TVM tracks. (A CumSum would be linear rather than quadratic, but
TVM lowers it to a kernel without compute blocks, which dltk's build pipeline refuses; n is a
sequence length, so n x n stays small.)

Only `Range(0, n, 1)` whose n comes from a Shape, or is arithmetic on such dims (`n + 1`, as T5's
dynamo export writes; then the length is that value unsqueezed, which the importer also tracks), at
opset 14 or later, is rewritten; any other Range is left alone.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

ONNX_DOMAINS = ("", "ai.onnx")
MIN_OPSET = 14  # Trilu


def rewrite_ranges(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy with each arange-from-a-shape rewritten (see the module's docstring); the model
    itself when it has none."""
    opset = next((o.version for o in model.opset_import if o.domain in ONNX_DOMAINS), 0)
    if opset < MIN_OPSET:
        return model
    constants = _constants(model)
    producers = {out: n for n in model.graph.node for out in n.output}
    plans = {}
    for index, node in enumerate(model.graph.node):
        if node.op_type == "Range" and node.domain in ONNX_DOMAINS and _is_arange(node, constants):
            source = _shape_source(node.input[1], producers, constants)
            if source is None and node.input[1] not in constants and is_shape_scalar(node.input[1], producers, constants):
                source = node.input[1]  # arithmetic on dims (e.g. n + 1): a value the importer tracks
            if source is not None:
                plans[index] = source
    if not plans:
        return model
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    nodes, initializers = [], []
    for index, node in enumerate(model.graph.node):
        if index not in plans:
            nodes.append(node)
            continue
        prefix = f"{node.name or 'range'}_{index}/"
        length = prefix + "length"  # (1,): the dimension, read by a Shape the importer tracks
        if isinstance(plans[index], str):
            initializers.append(numpy_helper.from_array(np.array([0], np.int64), prefix + "axis0"))
            nodes.append(helper.make_node("Unsqueeze", [plans[index], prefix + "axis0"], [length], name=prefix + "unsqueeze"))
        elif opset >= 15:
            data, axis = plans[index]
            nodes.append(helper.make_node("Shape", [data], [length], name=prefix + "shape", start=axis, end=axis + 1))
        else:  # Shape has no start/end before opset 15: slice its result
            data, axis = plans[index]
            bounds = [prefix + "start", prefix + "end"]
            initializers += [numpy_helper.from_array(np.array([axis + i], np.int64), b) for i, b in enumerate(bounds)]
            nodes.append(helper.make_node("Shape", [data], [prefix + "shape"], name=prefix + "shape_node"))
            nodes.append(helper.make_node("Slice", [prefix + "shape", *bounds], [length], name=prefix + "slice"))
        # position i = the count of ones left of the diagonal in row i of an n x n matrix
        square, ones, below = prefix + "square", prefix + "ones", prefix + "below"
        dtype = constants[node.input[0]].dtype
        nodes.append(helper.make_node("Concat", [length, length], [square], name=prefix + "square_node", axis=0))
        nodes.append(helper.make_node("ConstantOfShape", [square], [ones], name=prefix + "ones_node",
                                      value=numpy_helper.from_array(np.array([1], dtype))))
        nodes.append(helper.make_node("Trilu", [ones, prefix + "diagonal"], [below], name=prefix + "trilu", upper=0))
        nodes.append(_reduce_sum(below, node.output[0], prefix, opset, initializers))
        initializers.append(numpy_helper.from_array(np.array(-1, np.int64), prefix + "diagonal"))
    del rewritten.graph.node[:]
    rewritten.graph.node.extend(nodes)
    rewritten.graph.initializer.extend(initializers)
    return rewritten


def _reduce_sum(data: str, output: str, prefix: str, opset: int, initializers) -> onnx.NodeProto:
    if opset >= 13:  # axes became an input
        initializers.append(numpy_helper.from_array(np.array([1], np.int64), prefix + "axes"))
        return helper.make_node("ReduceSum", [data, prefix + "axes"], [output], name=prefix + "sum", keepdims=0)
    return helper.make_node("ReduceSum", [data], [output], name=prefix + "sum", axes=[1], keepdims=0)


def _is_arange(node: onnx.NodeProto, constants) -> bool:
    start, delta = constants.get(node.input[0]), constants.get(node.input[2])
    return (start is not None and delta is not None and start.size == 1 and delta.size == 1
            and np.issubdtype(start.dtype, np.integer) and int(start) == 0 and int(delta) == 1)


def _shape_source(scalar: str, producers, constants) -> tuple[str, int] | None:
    """(tensor, axis) when `scalar` is that tensor's size along axis, read from a Shape node."""
    node = producers.get(scalar)
    while node is not None and node.op_type in ("Squeeze", "Cast", "Reshape", "Identity"):
        node = producers.get(node.input[0])  # one-element reshapes of the same value
    if node is None:
        return None
    if node.op_type == "Shape":
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        start, end = attrs.get("start", 0), attrs.get("end")
        if end is not None and end - start == 1 and start >= 0:
            return node.input[0], start
        return None
    if node.op_type == "Gather" and node.input[1] in constants and node.input[0] in producers:
        shape = producers[node.input[0]]
        index = constants[node.input[1]]
        attrs = {a.name: helper.get_attribute_value(a) for a in shape.attribute}
        if shape.op_type == "Shape" and index.size == 1 and int(index) >= 0 and not attrs.get("start") and "end" not in attrs:
            return shape.input[0], int(index)
    return None


SCALAR_ARITHMETIC = ("Add", "Sub", "Mul", "Div", "Neg", "Identity")


def is_shape_scalar(name: str, producers, constants, depth: int = 8) -> bool:
    """Whether `name` is a 0-d integer computed from dims and constants (a dim read by Gather or by a
    one-dim Shape slice, and arithmetic on those): what TVM's importer holds as a symbolic PrimValue."""
    if name in constants:
        value = constants[name]
        return value.ndim == 0 and np.issubdtype(value.dtype, np.integer)
    node = producers.get(name)
    if node is None or depth == 0:
        return False
    source = producers.get(node.input[0])
    if node.op_type == "Gather":  # one dim of a Shape
        index = constants.get(node.input[1])
        return index is not None and index.ndim == 0 and source is not None and source.op_type == "Shape"
    if node.op_type == "Squeeze":  # a one-dim slice of a Shape
        if source is None or source.op_type != "Shape":
            return False
        attrs = {a.name: helper.get_attribute_value(a) for a in source.attribute}
        start, end = attrs.get("start", 0), attrs.get("end")
        return end is not None and start >= 0 and end - start == 1
    if node.op_type in SCALAR_ARITHMETIC:
        return all(is_shape_scalar(i, producers, constants, depth - 1) for i in node.input)
    return False


def _constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values
