"""Compare backends the way Polygraphy does: per output, then per layer to find where they part.

compare_outputs    two dicts of arrays: max abs/rel error, mismatches, a histogram of |error|
compare_backends   one model under several backends (torch, ort, tvm), each against the first
compare_layers     every intermediate tensor of the ONNX graph marked as an output and run on
                   ONNX Runtime and TVM; the first node (topological order) whose outputs
                   differ is where a compile went wrong
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from toolkit.errors import DltkError

# fp32 reference tolerances: |actual - expected| <= atol + rtol * |expected|, elementwise.
ATOL = 1e-4
RTOL = 1e-3
# |error| histogram: exactly 0, then decades up to 0.1, then everything larger.
ERROR_EDGES = (1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
ERROR_BINS = ("0", *(f"<{e:g}" for e in ERROR_EDGES), f">={ERROR_EDGES[-1]:g}")


@dataclass(frozen=True)
class OutputDiff:
    name: str
    max_abs: float
    max_rel: float  # relative to |expected|, floored at 1e-6 so exact zeros do not divide
    mismatches: int  # elements over tolerance
    size: int
    histogram: tuple[int, ...] = ()  # counts of |error| per ERROR_BINS

    def to_json(self) -> dict:
        return {"name": self.name, "max_abs_error": self.max_abs, "max_rel_error": self.max_rel,
                "mismatches": self.mismatches, "size": self.size,
                "histogram": dict(zip(ERROR_BINS, self.histogram))}


@dataclass(frozen=True)
class Comparison:
    reference: str
    candidate: str
    atol: float
    rtol: float
    outputs: list[OutputDiff]

    @property
    def passed(self) -> bool:
        return all(o.mismatches == 0 for o in self.outputs)

    @property
    def max_abs(self) -> float:
        return max((o.max_abs for o in self.outputs), default=0.0)

    @property
    def max_rel(self) -> float:
        return max((o.max_rel for o in self.outputs), default=0.0)

    def summary(self) -> str:
        verdict = "match" if self.passed else "DIFFER"
        return (
            f"{self.candidate} vs {self.reference}: {verdict} "
            f"(max abs {self.max_abs:.2e}, max rel {self.max_rel:.2e}; atol {self.atol:g}, rtol {self.rtol:g})"
        )

    def to_json(self) -> dict:
        return {
            "reference": self.reference,
            "candidate": self.candidate,
            "passed": self.passed,
            "max_abs_error": self.max_abs,
            "max_rel_error": self.max_rel,
            "atol": self.atol,
            "rtol": self.rtol,
            "outputs": [o.to_json() for o in self.outputs],
        }


def compare_outputs(
    expected: dict[str, np.ndarray],
    actual: dict[str, np.ndarray],
    reference: str,
    candidate: str,
    atol: float = ATOL,
    rtol: float = RTOL,
) -> Comparison:
    diffs = []
    for name, want in expected.items():
        got = actual[name]
        if got.shape != want.shape:
            raise ValueError(f"output '{name}': {candidate} gave shape {got.shape}, {reference} {want.shape}")
        want64, got64 = want.astype(np.float64), got.astype(np.float64)
        both_nan = np.isnan(got64) & np.isnan(want64)  # agreeing on NaN is agreeing
        magnitude = np.abs(np.where(np.isnan(want64), 0.0, want64))
        error = np.where(both_nan, 0.0, np.nan_to_num(np.abs(got64 - want64), nan=np.inf))
        relative = error / np.maximum(magnitude, 1e-6)
        over = error > atol + rtol * magnitude
        diffs.append(
            OutputDiff(
                name,
                float(error.max(initial=0.0)),
                float(relative.max(initial=0.0)),
                int(over.sum()),
                int(want.size),
                error_histogram(error),
            )
        )
    return Comparison(reference, candidate, atol, rtol, diffs)


def error_histogram(error: np.ndarray) -> tuple[int, ...]:
    flat = error.reshape(-1)
    zeros = int((flat == 0).sum())
    bins = np.searchsorted(np.asarray(ERROR_EDGES), flat[flat != 0], side="right")
    return (zeros, *np.bincount(bins, minlength=len(ERROR_EDGES) + 1).tolist())


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
    from toolkit.bench.subjects import open_subject

    if len(backends) < 2:
        raise DltkError("compare needs at least two backends", "e.g. --backend ort,tvm")
    subject = open_subject(source, backends, device, log=log)
    feeds = subject.feeds(batch)
    reference, *candidates = backends
    log(f"running {subject.model} on {reference}")
    expected = subject.session(reference).run(feeds)
    comparisons = []
    for candidate in candidates:
        log(f"running {subject.model} on {candidate}")
        actual = subject.session(candidate).run(feeds)
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
    from toolkit.bench.subjects import open_subject
    from toolkit.onnx_file import load_onnx

    if len(backends) != 2 or set(backends) != set(LAYER_BACKENDS):
        raise DltkError(f"--per-layer compares ort and tvm, not {','.join(backends)}", "use --backend ort,tvm")
    subject = open_subject(source, ["ort"], device, log=log)
    model = load_onnx(subject.onnx_path)
    extended, marked, skipped = mark_all_outputs(model)
    log(f"marked {sum(len(v) for v in marked.values())} intermediate tensors of {subject.model} as outputs")
    feeds = subject.feeds(batch)
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
    from toolkit.onnx_file import input_specs, output_specs

    if backend == "ort":
        from toolkit.runtime.ort import OrtSession

        return OrtSession(model.SerializeToString(), device)
    from toolkit import compile as compiler
    from toolkit.runtime.tvm import TvmSession
    from toolkit.target import resolve_target

    log("compiling the model with every tensor as an output for TVM")
    executable = compiler.build(compiler.import_onnx(model), resolve_target(device))
    return TvmSession(executable, input_specs(model), output_specs(model), device)
