"""What is in an ONNX model (or an artifact): inputs, outputs, ops, parameters, FLOPs, backend support."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import onnx

from toolkit import tvm_support
from toolkit.onnx_file import input_specs, load_onnx, output_specs
from toolkit.runtime.artifact import SOURCE_ONNX, is_artifact, open_artifact
from toolkit.runtime.model_source import ARTIFACT, ModelSource, read_metadata


def inspect_path(path) -> dict:
    source = ModelSource.of(path)
    if source.kind == ARTIFACT and is_artifact(source.path):
        artifact = open_artifact(source.path)
        report = inspect_model(load_onnx(artifact.file(SOURCE_ONNX)))
        keep = ("model", "target", "device", "files", "tuning", "variants", "engine", "verification", "versions")
        report["artifact"] = {k: artifact.manifest.get(k) for k in keep}
        return report
    return inspect_model(load_onnx(source.path))


def inspect_model(model: onnx.ModelProto) -> dict:
    ops = Counter(_op_key(node) for node in model.graph.node)
    domains = {_op_key(node): (node.op_type, node.domain) for node in model.graph.node}
    opset = _default_opset(model)
    ort_ops, tvm_table = _ort_supported(opset), tvm_support.converter_table()
    return {
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "opset": opset,
        "metadata": read_metadata(model),
        "inputs": [s.to_json() for s in input_specs(model)],
        "outputs": [s.to_json() for s in output_specs(model)],
        "parameters": int(sum(np.prod(t.dims, dtype=np.int64) for t in model.graph.initializer)),
        "flops_batch1": count_flops(model),
        "ops": [
            {"op": op, "count": n, "ort": op in ort_ops, "tvm": tvm_support.is_supported(*domains[op], tvm_table)}
            for op, n in sorted(ops.items(), key=lambda kv: (-kv[1], kv[0]))
        ],
        "tvm_unsupported": [u.to_json() for u in tvm_support.unsupported_ops(model)],  # subgraphs included
    }


def report_renderables(path, info: dict) -> list:
    """inspect_path's report for a terminal: lines (rich markup) and the op table."""
    from rich.markup import escape
    from rich.table import Table

    lines: list = [f"[bold]{escape(str(path))}[/bold]  producer {info['producer']}, opset {info['opset']}"]
    for kind in ("inputs", "outputs"):
        for t in info[kind]:
            shape = ", ".join(map(str, t["shape"]))
            lines.append(escape(f"  {kind[:-1]:6} {t['name']}: {t['dtype']}[{shape}]"))
    lines.append(f"  parameters {info['parameters']:,}   FLOPs at batch 1 {info['flops_batch1']:,}")
    table = Table("op", "count", "ort", "tvm", box=None)
    for op in info["ops"]:
        table.add_row(op["op"], str(op["count"]), "yes" if op["ort"] else "NO", "yes" if op["tvm"] else "NO")
    lines.append(table)
    if info["tvm_unsupported"]:
        unsupported = [tvm_support.UnsupportedOp(**u) for u in info["tvm_unsupported"]]
        lines.append(escape("  TVM cannot import it: " + tvm_support.describe(unsupported)))
    if "artifact" in info:
        a = info["artifact"]
        lines.append(escape(f"  artifact: target {json.dumps(a['target'])}, device {a['device']}, "
                            f"verification {json.dumps(a['verification'])}"))
        lines.append(escape(f"  tuning: {json.dumps(a.get('tuning'))}; "
                            f"static-batch variants {json.dumps(a.get('variants') or {})}"))
        lines.append(escape(f"  engine: {engine_line(a.get('engine'))}"))
    return lines


def engine_line(engine: dict | None) -> str:
    """The manifest's engine choice in words."""
    if not engine:
        return "tvm (artifact from before engine choice)"
    if "p50_ms" not in engine:
        return f"{engine['chosen']} ({engine.get('reason', '')})"
    measured = ", ".join(
        f"{name} " + " / ".join(f"b{b} {ms:.3f}" for b, ms in per_batch.items()) + " ms"
        for name, per_batch in engine["p50_ms"].items()
    )
    return f"{engine['chosen']} runs by default (p50 measured at compile: {measured})"


def _op_key(node) -> str:
    return node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"


def _default_opset(model) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _ort_supported(opset: int) -> set[str]:
    from onnxruntime.capi import onnxruntime_pybind11_state as C

    supported = set()
    for kernel in C.get_all_opkernel_def():
        first, last = kernel.version_range
        if first <= opset <= last:
            domain = kernel.domain if kernel.domain not in ("", "ai.onnx") else ""
            supported.add(f"{domain}.{kernel.op_name}" if domain else kernel.op_name)
    return supported


def count_flops(model: onnx.ModelProto, batch: int = 1) -> int:
    """Multiply-adds x2 of Conv, ConvTranspose, Gemm and MatMul, symbolic dims set to `batch`."""
    return graph_cost(model, batch)["flops"]


def graph_cost(model: onnx.ModelProto, batch: int = 1, shapes: dict[str, tuple] | None = None) -> dict:
    """FLOPs and bytes moved by one inference at `batch` (symbolic dims bound to it), or on inputs of
    these `shapes` (name -> shape: what a bench feeds, a GPT's sequence as well as its batch).

    flops: 2 per multiply-add of Conv, ConvTranspose, Gemm and MatMul (elementwise work is
    not counted, as fvcore and ptflops do). bytes: what an unfused execution reads and
    writes, every node reading its inputs (weights included) and writing its outputs;
    bytes_min: weights, graph inputs and outputs once, what even a perfect fusion moves.
    Tensors whose shape stays unknown after shape inference are left out of both.
    """
    model = _inferred(_with_symbols_bound(model, batch, shapes or {}))
    shapes = _known_shapes(model)
    sizes = _element_sizes(model)

    def nbytes(name: str) -> int:
        shape = shapes.get(name)
        return int(np.prod(shape, dtype=np.int64)) * sizes.get(name, 4) if shape is not None else 0

    flops = moved = 0
    for node in model.graph.node:
        moved += sum(nbytes(n) for n in list(node.input) + list(node.output) if n)
        out = shapes.get(node.output[0]) if node.output else None
        if out is None:
            continue
        if node.op_type in ("Conv", "ConvTranspose"):
            weight = shapes.get(node.input[1])
            if weight is None:
                continue
            per_output = int(np.prod(weight[1:]))  # Cin/groups * kernel
            if node.op_type == "ConvTranspose":
                per_output = int(np.prod(weight[2:])) * weight[0] // out[1]
            flops += 2 * int(np.prod(out)) * per_output
        elif node.op_type in ("Gemm", "MatMul"):
            a = shapes.get(node.input[0])
            if a is None:
                continue
            transposed = node.op_type == "Gemm" and any(at.name == "transA" and at.i for at in node.attribute)
            k = a[-2] if transposed else a[-1]
            flops += 2 * int(np.prod(out)) * k
    weights = sum(nbytes(t.name) for t in model.graph.initializer)
    ends = sum(nbytes(v.name) for v in list(model.graph.input) + list(model.graph.output))
    return {"flops": flops, "bytes": moved, "bytes_min": weights + ends, "weight_bytes": weights}


def _with_symbols_bound(model: onnx.ModelProto, size: int, shapes: dict[str, tuple]) -> onnx.ModelProto:
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for value in model.graph.input:
        shape = shapes.get(value.name)
        for axis, dim in enumerate(value.type.tensor_type.shape.dim):
            if not dim.HasField("dim_value"):
                dim.dim_value = shape[axis] if shape is not None and axis < len(shape) else size
    return model


def _element_sizes(model: onnx.ModelProto) -> dict[str, int]:
    graph = model.graph
    sizes = {t.name: onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize for t in graph.initializer}
    for value in list(graph.input) + list(graph.value_info) + list(graph.output):
        elem = value.type.tensor_type.elem_type
        if elem:
            sizes[value.name] = onnx.helper.tensor_dtype_to_np_dtype(elem).itemsize
    return sizes


def _inferred(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # shape inference gives up on some custom ops; count what is known
        return model


def _known_shapes(inferred: onnx.ModelProto) -> dict[str, list[int]]:
    shapes = {t.name: list(t.dims) for t in inferred.graph.initializer}
    graph = inferred.graph
    for value in list(graph.input) + list(graph.value_info) + list(graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = [d.dim_value for d in dims]
    return shapes
