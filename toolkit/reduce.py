"""`dltk debug reduce`: shrink a model TVM fails on to the smallest subgraph that still fails.

After Polygraphy's `debug reduce`: the graph's nodes, in topological order, are cut to a
contiguous range, bisected twice, then pruned to the failing node's ancestors:
1. the shortest prefix [0, end] that still fails: the failing node is `end`;
2. the shortest suffix [start, end] of that prefix that still fails;
3. within it, only the nodes `end` depends on, when that still fails.

A cut graph takes, as inputs, the tensors it reads but does not make. Integer and boolean ones
(shapes, indices, masks) become constants holding the values the whole model computes on a
random input (run on the reference), so a Reshape keeps its real shape; floating-point ones
become graph inputs, fed with those values when outputs are compared. Every tensor the range
makes and does not use itself is an output.

Modes, the failure looked for:
- import:  TVM's ONNX importer refuses the graph (toolkit.compile.import_onnx raises);
- compile: it imports, but building it for the target fails;
- diverge: it builds, and its outputs differ from the reference's beyond atol/rtol.
Without a mode, the first of these the whole model shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from toolkit import compile as compiler
from toolkit import tune
from toolkit.errors import DltkError
from toolkit.files import write_atomically
from toolkit.onnx_file import input_specs, load_onnx, output_specs
from toolkit.parity import ATOL, RTOL, compare_outputs
from toolkit.reference import ReferenceSession
from toolkit.runtime.batch import named_batch_symbols
from toolkit.runtime.ort import OrtSession
from toolkit.runtime.spec import random_feeds
from toolkit.simplify import simplify
from toolkit.target import device_of, resolve_target

MODES = ("import", "compile", "diverge")
SEED = 0


@dataclass(frozen=True)
class Reduction:
    model: onnx.ModelProto  # the smallest failing subgraph
    mode: str
    failing_node: str  # its name, or "#index" in the source's node order
    failing_op: str
    reason: str  # the failure, one line
    nodes_before: int
    nodes_after: int
    checks: int  # subgraphs tried

    def summary(self) -> str:
        return (f"{self.mode} failure reduced from {self.nodes_before} to {self.nodes_after} nodes in {self.checks} checks; "
                f"failing node {self.failing_node} ({self.failing_op}): {self.reason}")


def reduce_model(model: onnx.ModelProto, mode: str | None = None, target: str | dict = "cpu",
                 atol: float = ATOL, rtol: float = RTOL, log=lambda line: None) -> Reduction:
    """The smallest subgraph of `model` that fails as `mode` says (see the module's docstring)."""

    if mode is not None and mode not in MODES:
        raise DltkError(f"unknown mode '{mode}'", f"use one of {', '.join(MODES)}")
    graph = _Graph(model, log)
    check = _Checker(resolve_target(target), atol, rtol)
    whole = list(range(len(graph.nodes)))
    failure = check.failure(graph.cut(whole), graph.feeds_for, mode)
    if failure is None:
        raise DltkError(f"the model {'shows no ' + mode + ' failure' if mode else 'imports, compiles and matches the reference'}",
                        "nothing to reduce" + ("" if mode else "; give --mode to look for one kind of failure"))
    mode = failure[0]
    graph.floats_only = mode == "diverge"
    log(f"the whole model fails ({mode}): {failure[1]}")

    def fails(indices) -> str | None:
        found = check.failure(graph.cut(indices), graph.feeds_for, mode)
        return found[1] if found else None

    # 1. the shortest failing prefix: nodes 0..end
    low, high = 0, len(whole) - 1  # invariant: the prefix up to `high` fails
    while low < high:
        middle = (low + high) // 2
        if fails(whole[: middle + 1]):
            high = middle
        else:
            low = middle + 1
    end = high
    # 2. the shortest failing suffix of that prefix: nodes start..end
    low, high = 0, end  # invariant: start..end fails for start = low
    while low < high:
        middle = (low + high + 1) // 2
        if fails(whole[middle : end + 1]):
            low = middle
        else:
            high = middle - 1
    kept = whole[low : end + 1]
    # 3. only what the failing node depends on
    ancestors = graph.ancestors(end, kept)
    if len(ancestors) < len(kept) and fails(ancestors):
        kept = ancestors
    reason = fails(kept) or failure[1]
    node = graph.nodes[end]
    log(f"reduced to {len(kept)} of {len(whole)} nodes")
    return Reduction(graph.cut(kept), mode, node.name or f"#{end}", node.op_type, reason, len(whole), len(kept), check.count)


class _Graph:
    """The source graph, its inferred types and the values of every tensor on one random input."""

    def __init__(self, model: onnx.ModelProto, log):
        self.model = model
        self.nodes = list(model.graph.node)
        try:
            inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
        except Exception:  # inference gives up on some custom ops; cut with what the file declares
            inferred = model
        graph = inferred.graph
        self.types = {v.name: v for v in (*graph.input, *graph.value_info, *graph.output)}
        self.initializers = {t.name: t for t in model.graph.initializer}
        self.graph_inputs = [i for i in model.graph.input if i.name not in self.initializers]
        self.values = _all_values(model, log)
        self.floats_only = False  # set for the diverge mode: see _may_output

    def ancestors(self, index: int, within: list[int]) -> list[int]:
        """The nodes of `within` that node `index` reads from, directly or not, and itself."""
        producer = {out: i for i in within for out in self.nodes[i].output if out}
        needed, stack = {index}, [index]
        while stack:
            for name in _reads(self.nodes[stack.pop()]):
                i = producer.get(name)
                if i is not None and i not in needed:
                    needed.add(i)
                    stack.append(i)
        return sorted(needed)

    def cut(self, indices: list[int]) -> onnx.ModelProto:
        nodes = [self.nodes[i] for i in indices]
        made = {out for node in nodes for out in node.output if out}
        read = [name for node in nodes for name in _reads(node) if name and name not in made]
        inputs, initializers, seen = [], [], set()
        for name in read:
            if name in seen:
                continue
            seen.add(name)
            value = self.values.get(name)
            if name in self.initializers:
                initializers.append(self.initializers[name])
            elif any(i.name == name for i in self.graph_inputs):
                inputs.append(next(i for i in self.graph_inputs if i.name == name))
            elif value is not None and value.dtype.kind in "iub":  # shapes, indices, masks: their real values
                initializers.append(numpy_helper.from_array(value, name))
            else:
                inputs.append(self._value_info(name))
        used_inside = {name for node in nodes for name in _reads(node)}
        graph_outputs = {o.name for o in self.model.graph.output}
        outputs = [self._value_info(name) for node in nodes for name in node.output
                   if name and (name not in used_inside or name in graph_outputs) and self._may_output(name)]
        graph = helper.make_graph(nodes, f"{self.model.graph.name}_reduced", inputs, outputs, initializers)
        reduced = helper.make_model(graph, opset_imports=list(self.model.opset_import))
        reduced.ir_version = max(self.model.ir_version, 4)  # 4 and later: initializers need not be inputs
        return reduced

    def _may_output(self, name: str) -> bool:
        """When outputs are compared, integer results (shape arithmetic) stay inside: TVM returns
        some as shape tuples rather than tensors, which is no divergence."""
        value = self.values.get(name)
        return not self.floats_only or value is None or value.dtype.kind == "f"

    def feeds_for(self, model: onnx.ModelProto) -> dict[str, np.ndarray]:
        """The cut graph's inputs, with the values the whole model computed (random where unknown)."""

        specs = input_specs(model)
        feeds = random_feeds(specs, seed=SEED)
        for spec in specs:
            if spec.name in self.values:
                feeds[spec.name] = self.values[spec.name]
        return feeds

    def _value_info(self, name: str) -> onnx.ValueInfoProto:
        value = self.values.get(name)
        known = self.types.get(name)
        if known is not None and known.type.tensor_type.elem_type:
            return known
        if value is not None:
            return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(value.dtype), list(value.shape))
        return helper.make_empty_tensor_value_info(name)


class _Checker:
    """Runs one subgraph through TVM and says whether, and how, it fails."""

    def __init__(self, target: dict, atol: float, rtol: float):

        self.target, self.device, self.atol, self.rtol = target, device_of(target), atol, rtol
        self.count = 0

    def failure(self, model: onnx.ModelProto, feeds_for, mode: str | None) -> tuple[str, str] | None:
        """(mode, reason) of the first failure looked for, or None when the subgraph passes."""
        from toolkit.runtime.tvm import TvmSession

        self.count += 1
        try:  # as `dltk compile` imports: simplified first
            module = compiler.import_onnx(simplify(model))
        except Exception as e:  # DltkError from the check, or whatever the importer raised
            return ("import", _first_line(e)) if mode in (None, "import") else None
        if mode == "import":
            return None
        try:  # and as it builds: fused, records and dltk's schedules applied, NaN-propagating max/min
            prepared = tune.prepare(module, self.target, named_batch_symbols(input_specs(model)), tune.TuneOptions())
            executable = compiler.build(prepared, self.target)
        except Exception as e:
            return ("compile", _first_line(e)) if mode in (None, "compile") else None
        if mode == "compile":
            return None
        reference = _reference_session(model)
        if reference is None:
            return None  # nothing to compare with: not a divergence we can show
        feeds = feeds_for(model)
        expected = reference.run(feeds)
        try:
            actual = TvmSession(executable, input_specs(model), output_specs(model), self.device).run(feeds)
            comparison = compare_outputs(expected, actual, "reference", "tvm", self.atol, self.rtol)
        except Exception as e:  # a crash or a wrong output shape is a divergence too
            return "diverge", _first_line(e)
        return None if comparison.passed else ("diverge", comparison.summary())


def _reference_session(model: onnx.ModelProto):

    try:
        return OrtSession(model.SerializeToString())
    except DltkError:
        try:
            return ReferenceSession(model)
        except DltkError:
            return None


def _all_values(model: onnx.ModelProto, log) -> dict[str, np.ndarray]:
    """Every node output's value on one random input, from ONNX Runtime or the ONNX reference; {} when neither runs."""

    extended = onnx.ModelProto()
    extended.CopyFrom(model)
    present = {o.name for o in extended.graph.output}
    for node in extended.graph.node:
        for name in node.output:
            if name and name not in present:
                extended.graph.output.append(helper.make_empty_tensor_value_info(name))
                present.add(name)
    feeds = random_feeds(input_specs(model), seed=SEED)
    try:
        import onnxruntime as ort

        session = ort.InferenceSession(extended.SerializeToString(), providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, feeds)))
    except Exception:  # ONNX Runtime cannot load or run it: try the ONNX reference implementation
        pass
    try:
        from onnx.reference import ReferenceEvaluator

        evaluator = ReferenceEvaluator(model)
        names = [name for node in model.graph.node for name in node.output if name]
        values = evaluator.run(None, feeds, intermediate=True)
        return {n: np.asarray(values[n]) for n in names if n in values}
    except Exception as e:
        log(f"no reference computes the model's tensors ({_first_line(e)}); cut tensors become graph inputs")
        return {}


def _reads(node: onnx.NodeProto) -> list[str]:
    """The node's inputs and the outer-scope names its subgraphs (If, Loop, Scan bodies) read."""
    names = list(node.input)
    for attribute in node.attribute:
        for subgraph in [attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else list(attribute.graphs):
            defined = {i.name for i in subgraph.input} | {t.name for t in subgraph.initializer}
            for inner in subgraph.node:
                names += [n for n in _reads(inner) if n not in defined]
                defined.update(inner.output)
    return names


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def reduce_file(path, output=None, mode: str | None = None, target: str | dict = "cpu",
                atol: float = ATOL, rtol: float = RTOL, log=lambda line: None) -> tuple[Reduction, Path]:
    """Reduce the ONNX file at `path`; write the subgraph to `output` (default: NAME.reduced.onnx here)."""

    path = Path(path)
    output = Path(output) if output else Path(f"{path.stem}.reduced.onnx")
    reduction = reduce_model(load_onnx(path), mode, target, atol, rtol, log)
    write_atomically(output, reduction.model.SerializeToString())
    return reduction, output
