"""Compare backends the way Polygraphy does: per output, then per layer to find where they part.

compare_backends   one model under several backends (torch, ort, tvm), each against the first
compare_layers     every intermediate tensor of the ONNX graph marked as an output and run on
                   ONNX Runtime and TVM; the first node (topological order) whose outputs
                   differ is where a compile went wrong

Each pair of outputs is compared by toolkit.parity.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from toolkit import compile as compiler
from toolkit.errors import DltkError
from toolkit.onnx_file import input_specs, load_onnx, output_specs
from toolkit.parity import ATOL, RTOL, Comparison, OutputDiff, compare_outputs
from toolkit.sources import open_source
from toolkit.target import resolve_target

# --- backends side by side ---------------------------------------------------------------------


def compare_backends(
    source: str,
    backends: list[str],
    batch: int = 8,
    device: str = "cpu",
    atol: float = ATOL,
    rtol: float = RTOL,
    log=lambda line: None,
) -> list[Comparison]:
    """Run `source` (zoo NAME, checkpoint, ONNX file or artifact) on each backend; compare each with the first."""
    if len(backends) < 2:
        raise DltkError("compare needs at least two backends", "e.g. --backend ort,tvm")
    opened = open_source(source, backends, device, log=log)
    feeds = opened.feeds(batch)
    reference, *candidates = backends
    log(f"running {opened.model} on {reference}")
    expected = opened.open(reference, None).run(feeds)
    comparisons = []
    for candidate in candidates:
        log(f"running {opened.model} on {candidate}")
        actual = opened.open(candidate, None).run(feeds)
        comparisons.append(compare_outputs(expected, actual, reference, candidate, atol, rtol))
    return comparisons


# --- layer by layer ----------------------------------------------------------------------------

LAYER_BACKENDS = ("ort", "tvm")


@dataclass(frozen=True)
class LayerDiff:
    index: int  # position in the graph's (topological) node order
    node: str
    op_type: str
    outputs: list[OutputDiff]

    @property
    def passed(self) -> bool:
        return all(o.mismatches == 0 for o in self.outputs)

    def to_json(self) -> dict:
        return {"index": self.index, "node": self.node, "op_type": self.op_type, "passed": self.passed,
                "outputs": [o.to_json() for o in self.outputs]}


@dataclass(frozen=True)
class LayerComparison:
    reference: str
    candidate: str
    atol: float
    rtol: float
    layers: list[LayerDiff]
    skipped: list[str]  # intermediate tensors not compared (not floating point, or of unknown type)

    @property
    def first_divergence(self) -> LayerDiff | None:
        return next((layer for layer in self.layers if not layer.passed), None)

    @property
    def passed(self) -> bool:
        return self.first_divergence is None

    def summary(self) -> str:
        first = self.first_divergence
        if first is None:
            return f"{self.candidate} vs {self.reference}: all {len(self.layers)} layers match (atol {self.atol:g}, rtol {self.rtol:g})"
        worst = max(first.outputs, key=lambda o: o.max_abs)
        return (f"{self.candidate} vs {self.reference}: first divergence at node {first.node} ({first.op_type}, "
                f"#{first.index}), output {worst.name}: max abs {worst.max_abs:.2e}, "
                f"{worst.mismatches}/{worst.size} over tolerance")

    def lines(self) -> list[str]:
        """A line per layer (the first divergence marked), its histograms, then the summary."""
        first = self.first_divergence
        lines = []
        for layer in self.layers:
            worst = max(layer.outputs, key=lambda o: o.max_abs)
            mark = "  <- first divergence" if layer is first else ""
            lines.append(f"  #{layer.index:<4} {layer.node:32} {layer.op_type:18} max abs {worst.max_abs:.2e}  "
                         f"max rel {worst.max_rel:.2e}  {worst.mismatches}/{worst.size} over{mark}")
        if first is not None:
            lines.append("")
            for o in first.outputs:
                lines.append(f"  {first.node} output {o.name}:")
                lines += o.histogram_lines()
        if self.skipped:
            lines.append(f"  not compared (not floating point): {', '.join(self.skipped)}")
        return lines + [self.summary()]

    def to_json(self) -> dict:
        first = self.first_divergence
        return {"reference": self.reference, "candidate": self.candidate, "atol": self.atol, "rtol": self.rtol,
                "passed": self.passed, "first_divergence": first.node if first else None,
                "layers": [layer.to_json() for layer in self.layers], "skipped": self.skipped}


def compare_layers(
    source: str,
    backends: list[str] = LAYER_BACKENDS,
    batch: int = 1,
    device: str = "cpu",
    atol: float = ATOL,
    rtol: float = RTOL,
    log=lambda line: None,
) -> LayerComparison:
    """Mark every intermediate tensor as an output, run both backends, compare node by node."""
    if len(backends) != 2 or set(backends) != set(LAYER_BACKENDS):
        raise DltkError(f"--per-layer compares ort and tvm, not {','.join(backends)}", "use --backend ort,tvm")
    opened = open_source(source, ["ort"], device, log=log)
    model = load_onnx(opened.onnx_path)
    extended, marked, skipped = mark_all_outputs(model)
    log(f"marked {sum(len(v) for v in marked.values())} intermediate tensors of {opened.model} as outputs")
    feeds = opened.feeds(batch)
    nodes = [(node.name or f"#{index}", node.op_type) for index, node in enumerate(extended.graph.node)]
    values = {backend: _layer_session(backend, extended, device, log).run(feeds) for backend in backends}
    reference, candidate = backends
    layers = []
    for index, (name, op_type) in enumerate(nodes):
        names = marked.get(index)
        if not names:
            continue
        diff = compare_outputs({n: values[reference][n] for n in names}, {n: values[candidate][n] for n in names},
                               reference, candidate, atol, rtol)
        layers.append(LayerDiff(index, name, op_type, diff.outputs))
    return LayerComparison(reference, candidate, atol, rtol, layers, skipped)


def mark_all_outputs(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[int, list[str]], list[str]]:
    """A copy whose graph outputs include every floating-point node output, typed by shape inference.

    Returns the copy, the tensors compared per node index, and the names left out (integer
    shape arithmetic, tensors whose type inference could not tell).
    """
    inferred = onnx.shape_inference.infer_shapes(model)
    typed = {v.name: v for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    extended = onnx.ModelProto.FromString(model.SerializeToString())
    present = {o.name for o in extended.graph.output}
    marked: dict[int, list[str]] = {}
    skipped = []
    for index, node in enumerate(extended.graph.node):
        if node.op_type == "Constant":
            continue
        for name in node.output:
            if not name:
                continue
            value = typed.get(name)
            elem = value.type.tensor_type.elem_type if value is not None else 0
            if elem not in _FLOAT_TYPES:
                skipped.append(name)
                continue
            if name not in present:
                extended.graph.output.append(value)
                present.add(name)
            marked.setdefault(index, []).append(name)
    return extended, marked, skipped


_FLOAT_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16)


def _layer_session(backend: str, model: onnx.ModelProto, device: str, log):
    """A session over the extended model. TVM's is built in memory and not verified: finding where
    it disagrees with ONNX Runtime is the point, so compile_model's check would refuse it."""
    if backend == "ort":
        from toolkit.runtime.ort import OrtSession

        return OrtSession(model.SerializeToString(), device)
    from toolkit.runtime.tvm import TvmSession  # tvm

    log("compiling the model with every tensor as an output for TVM")
    target = resolve_target(device)
    executable = compiler.build(compiler.import_onnx(model, target), target)
    return TvmSession(executable, input_specs(model), output_specs(model), device)
