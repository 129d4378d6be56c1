"""Rewrite a pooling whose one window covers the whole input as the global pooling it is.

Hugging Face's EfficientNet ends with `nn.AvgPool2d(hidden_dim, ceil_mode=True)`: a 1280x1280
window (320x320 in a small config) over a 7x7 (or 1x1) feature map. TVM lowers AveragePool to a
loop over the whole window with a bounds check per element, 100,000 checks per output channel
for 49 values, and the model ran 120x slower than on ONNX Runtime. When the output is one
position per spatial axis, the window starts at the input's first element (no leading padding)
and reaches past its last, the pooling reads every input element once: GlobalAveragePool
(GlobalMaxPool), which TVM lowers to a plain reduction.

An average divides by the elements it counts. With no padding anywhere, or padding not counted
(`count_include_pad=0`), that is every input element in both forms; padding that is counted
changes the divisor, so such a pool is left as it is. A MaxPool whose indices are used is left too.
"""

from __future__ import annotations

import onnx
from onnx import helper

from toolkit.optimize.dynamic_shapes import ONNX_DOMAINS

GLOBAL_FORM = {"AveragePool": "GlobalAveragePool", "MaxPool": "GlobalMaxPool"}


def whole_input_pools(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy with each whole-input pooling made global; the model itself when it has none."""
    pools = [n for n in model.graph.node if n.op_type in GLOBAL_FORM and n.domain in ONNX_DOMAINS]
    if not pools:
        return model
    shapes = _static_shapes(model)
    replaced = {id(n): _global_form(n, shapes) for n in pools}
    if all(r is None for r in replaced.values()):
        return model
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    del copy.graph.node[:]
    copy.graph.node.extend(replaced.get(id(n)) or n for n in model.graph.node)
    return copy


def _global_form(node: onnx.NodeProto, shapes: dict[str, list]) -> onnx.NodeProto | None:
    if len(node.output) > 1 and node.output[1]:  # MaxPool's indices: the global form has none
        return None
    source, result = shapes.get(node.input[0]), shapes.get(node.output[0])
    if source is None or result is None or len(source) < 3 or len(source) != len(result):
        return None
    spatial = source[2:]
    if not all(isinstance(d, int) and d > 0 for d in spatial) or any(d != 1 for d in result[2:]):
        return None
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if _text(attrs.get("auto_pad", "NOTSET")) not in ("NOTSET", "VALID"):
        return None
    kernel = list(attrs.get("kernel_shape", []))
    pads = list(attrs.get("pads", [0] * 2 * len(spatial)))
    dilations = list(attrs.get("dilations", [1] * len(spatial)))
    if len(kernel) != len(spatial) or any(d != 1 for d in dilations) or any(pads[: len(spatial)]):
        return None
    if any(k < d for k, d in zip(kernel, spatial)):
        return None
    if node.op_type == "AveragePool" and any(pads) and attrs.get("count_include_pad", 0):
        return None
    return helper.make_node(GLOBAL_FORM[node.op_type], [node.input[0]], [node.output[0]],
                            name=(node.name or node.op_type) + "/global")


def _static_shapes(model: onnx.ModelProto) -> dict[str, list]:
    """Each value's inferred shape: ints where static, names or None where not."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # a model shape inference cannot take (over 2 GB, an unknown op): no rewrite
        return {}
    shapes = {}
    for value in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        tensor = value.type.tensor_type
        if tensor.HasField("shape"):
            shapes[value.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                                  for d in tensor.shape.dim]
    return shapes


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
