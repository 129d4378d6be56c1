"""Read ONNX files with one-line errors for the usual mistakes."""

from __future__ import annotations

from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from toolkit.errors import DltkError, first_line
from toolkit.runtime.spec import TensorSpec, check_input_dims

_DTYPES = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.DOUBLE: "float64",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.INT32: "int32",
    onnx.TensorProto.INT8: "int8",
    onnx.TensorProto.UINT8: "uint8",
    onnx.TensorProto.BOOL: "bool",
}


def load_onnx(path) -> onnx.ModelProto:
    path = Path(path)
    if not path.exists():
        raise DltkError(f"no such file: {path}", "check the path")
    if not path.is_file():
        raise DltkError(f"{path} is not a file", "give an ONNX model file")
    try:
        model = onnx.load(str(path))
    except (DecodeError, ValueError, RuntimeError) as e:
        raise DltkError(f"{path} is not an ONNX model or is truncated ({type(e).__name__})", "re-export it") from e
    if not model.graph.node or not model.opset_import:
        raise DltkError(f"{path} is not an ONNX model: it has no graph", "re-export it")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as e:
        raise DltkError(f"{path} is not a valid ONNX model: {first_line(e)}", "re-export it") from e
    return model


def tensor_specs(values, skip: set[str] = frozenset()) -> list[TensorSpec]:
    """Specs of graph inputs or outputs; initializers listed as inputs (old exporters) are skipped."""
    specs = []
    for value in values:
        if value.name in skip:
            continue
        tensor = value.type.tensor_type
        shape = tuple(d.dim_param or (d.dim_value if d.HasField("dim_value") else "?") for d in tensor.shape.dim)
        specs.append(TensorSpec(value.name, shape, _DTYPES.get(tensor.elem_type, onnx.TensorProto.DataType.Name(tensor.elem_type).lower())))
    return specs


def input_specs(model: onnx.ModelProto) -> list[TensorSpec]:
    return check_input_dims(tensor_specs(model.graph.input, skip={i.name for i in model.graph.initializer}),
                            model.graph.name or "the model")


def output_specs(model: onnx.ModelProto) -> list[TensorSpec]:
    return tensor_specs(model.graph.output)


def fix_dims(model: onnx.ModelProto, sizes: dict[str, int]) -> onnx.ModelProto:
    """A copy with the named symbolic dims made static (onnxruntime's make_dim_param_fixed), for a model
    whose export left dims dynamic that it cannot vary (Optimum's ViT: channels, height and width)."""
    from onnxruntime.tools.onnx_model_utils import make_dim_param_fixed

    named = {d.dim_param for i in model.graph.input for d in i.type.tensor_type.shape.dim if d.dim_param}
    unknown = sorted(set(sizes) - named)
    if unknown:
        raise DltkError(f"the model's inputs have no dim named {', '.join(unknown)}",
                        f"its symbolic dims: {', '.join(sorted(named)) or 'none'}")
    bad = sorted(name for name, size in sizes.items() if size < 1)
    if bad:
        raise DltkError(f"dim {bad[0]} must be at least 1", f"got {sizes[bad[0]]}")
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for name, size in sizes.items():
        make_dim_param_fixed(fixed.graph, name, size)
    return fixed
