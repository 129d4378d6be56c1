"""Which ops of an ONNX graph TVM's Relax importer converts, checked before import, all at once.

TVM's `from_onnx` stops at the first op it has no converter for (per graph; subgraphs later),
and it picks converters by op type alone, whatever the node's domain. Here every node, in every
subgraph, is checked against the importer's converter table, so the user hears about all
of them in one go. An op counts as supported when:
- its domain is ONNX's ("" or ai.onnx) or com.microsoft (whose contrib ops, e.g. FastGelu,
  SkipLayerNormalization, have converters under their own names), and the table has its type, or
- dltk rewrites it into supported ops before import (`toolkit.optimize.LOWERED_OPS`).
A node of any other domain is unsupported even when an ONNX op shares its name: TVM would
convert it as that ONNX op, which it is not.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import onnx

from toolkit.errors import DltkError
from toolkit.optimize import LOWERED_OPS

ONNX_DOMAINS = ("", "ai.onnx")
CONVERTED_DOMAINS = (*ONNX_DOMAINS, "com.microsoft")
HANDLED_BY_THE_IMPORTER = frozenset({"If", "Constant"})  # not in the table, handled inline by from_onnx


@dataclass(frozen=True)
class UnsupportedOp:
    op: str
    domain: str  # "" for ONNX's
    opset: int  # the model's version of the op's domain
    count: int  # nodes with this op
    first_node: str  # the first such node's name, or "#index" when unnamed

    def describe(self) -> str:
        where = f"opset {self.opset}" if self.domain in ONNX_DOMAINS else f"domain {self.domain} v{self.opset}"
        nodes = f"{self.count} nodes, first {self.first_node}" if self.count > 1 else f"node {self.first_node}"
        return f"{self.op} ({where}; {nodes})"

    def to_json(self) -> dict:
        return {"op": self.op, "domain": self.domain, "opset": self.opset, "count": self.count, "first_node": self.first_node}


def converter_table() -> frozenset[str]:
    """Op types the importer has converters for, plus those it handles inline."""
    from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map

    return frozenset(_get_convert_map()) | HANDLED_BY_THE_IMPORTER


def is_supported(op_type: str, domain: str, table: frozenset[str] | None = None) -> bool:
    table = converter_table() if table is None else table
    if domain in ONNX_DOMAINS and op_type in LOWERED_OPS:
        return True
    return domain in CONVERTED_DOMAINS and op_type in table


def unsupported_ops(model: onnx.ModelProto) -> list[UnsupportedOp]:
    """Every op of the graph and its subgraphs that `dltk compile` cannot hand to TVM, in graph order."""
    table = converter_table()
    versions = {o.domain or "": o.version for o in model.opset_import}
    versions.setdefault("", versions.get("ai.onnx", 0))
    counts: Counter = Counter()
    first: dict[tuple[str, str], str] = {}
    for index, node in enumerate(_all_nodes(model.graph)):
        domain = "" if node.domain == "ai.onnx" else node.domain
        if is_supported(node.op_type, domain, table):
            continue
        key = (domain, node.op_type)
        counts[key] += 1
        first.setdefault(key, node.name or f"#{index}")
    return [UnsupportedOp(op, domain, versions.get(domain, 0), counts[(domain, op)], first[(domain, op)])
            for (domain, op) in first]


def describe(unsupported: list[UnsupportedOp]) -> str:
    """One line naming every unsupported op."""
    return f"no TVM converter for {len(unsupported)} op{'s' if len(unsupported) > 1 else ''}: " + ", ".join(
        u.describe() for u in unsupported
    )


_DYNAMIC_INT8_OPS = ("ConvInteger", "MatMulInteger", "DynamicQuantizeLinear")  # dltk quantize --mode dynamic


def require_importable(model: onnx.ModelProto) -> None:
    """Raise DltkError naming every op TVM cannot import, when there are any."""
    unsupported = unsupported_ops(model)
    if unsupported:
        fix = "rewrite those ops into supported ones, or run the model on ONNX Runtime"
        if any(u.op in _DYNAMIC_INT8_OPS for u in unsupported):
            fix = "TVM imports int8 as QDQ: quantize with 'dltk quantize --mode static'; ONNX Runtime runs this file as it is"
        raise DltkError(f"TVM cannot import this model: {describe(unsupported)}", fix)


def _all_nodes(graph: onnx.GraphProto):
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield from _all_nodes(attribute.g)
            elif attribute.type == onnx.AttributeProto.GRAPHS:
                for subgraph in attribute.graphs:
                    yield from _all_nodes(subgraph)
