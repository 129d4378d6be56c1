"""Self-attention fused into ONNX Runtime's com.microsoft Attention, for the dynamic int8 models that run there.

quantize_dynamic turns an Attention node into QAttention: one int8 kernel for the QKV projection, the
heads' scores, the causal mask, the softmax and the weighted sum. Left as torch writes it, the same block is
sixteen nodes, each a call with its own threads and its own pass over memory, and on a 128-wide GPT that
glue costs more than int8 saves in its MatMuls. On the zoo GPT (Zen 3, 2 threads, side by side): dynamic int8
ran at 0.80x / 0.88x the fp32 model's p50 at batch 1 / 8 unfused, 0.66x / 0.61x fused
(benchmarks/results/amd-epyc-2c/precision.md).

The pattern is the one torch.onnx writes for models/transformer.py's SelfAttention (the GPT's too):

    x -> MatMul(W[C, 3C]) -> Add(b[3C]) -> Split(3, last axis)
    q, v -> Reshape(B, T, H, D) -> Transpose(0, 2, 1, 3);   k -> Reshape -> Transpose(0, 2, 3, 1)
    q @ kT -> Div(sqrt(D)) -> [Where(Not(Slice(tril)), -inf, .)] -> Softmax(-1) -> @ v
           -> Transpose(0, 2, 1, 3) -> Reshape(B, T, C)

Only a match in every detail is fused (the scale is 1/sqrt(D), the mask a lower triangle sliced from its
corner, no intermediate read elsewhere); anything else stays as it is. TVM has no converter for
Attention, so this is for graphs that ONNX Runtime runs, never for_tvm.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx
from onnx import helper, numpy_helper

CONTRIB = "com.microsoft"


def fuse_attention(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """A copy of `model` with each matching self-attention block one Attention node, and how many were fused."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = _Graph(model.graph)
    fused = [block for split in list(graph.nodes) if split.op_type == "Split" and (block := _match(graph, split))]
    if not fused:
        return model, 0
    replaced = {id(node) for block in fused for node in block.nodes}
    at_end = {id(block.nodes[-1]): block for block in fused}
    nodes = []
    for node in model.graph.node:
        if id(node) in at_end:
            nodes.append(at_end[id(node)].node())
        elif id(node) not in replaced:
            nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(_without_dead_nodes(nodes, {o.name for o in model.graph.output}))
    if not any(o.domain == CONTRIB for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(CONTRIB, 1))
    return model, len(fused)


class _Block:
    def __init__(self, nodes: list, x: str, weight: str, bias: str, heads: int, causal: bool, name: str):
        self.nodes, self.x, self.weight, self.bias, self.heads, self.causal, self.name = (
            nodes, x, weight, bias, heads, causal, name)

    def node(self) -> onnx.NodeProto:
        return helper.make_node("Attention", [self.x, self.weight, self.bias], [self.nodes[-1].output[0]],
                                name=f"{self.name}_attention", domain=CONTRIB, num_heads=self.heads,
                                unidirectional=int(self.causal))


class _Graph:
    def __init__(self, graph: onnx.GraphProto):
        self.nodes = list(graph.node)
        self.constants = {t.name: t for t in graph.initializer}
        self.producer = {out: node for node in graph.node for out in node.output}
        self.readers = defaultdict(list)
        for node in graph.node:
            for name in node.input:
                self.readers[name].append(node)
        self.outputs = {o.name for o in graph.output}

    def constant(self, name: str) -> np.ndarray | None:
        return numpy_helper.to_array(self.constants[name]) if name in self.constants else None

    def only_reader(self, name: str, op_type: str):
        """The one node reading `name`, when it is an `op_type` and nothing else (no graph output) reads it."""
        readers = self.readers.get(name, [])
        if len(readers) == 1 and readers[0].op_type == op_type and name not in self.outputs:
            return readers[0]
        return None


def _match(graph: _Graph, split) -> _Block | None:
    add = graph.producer.get(split.input[0])
    matmul = graph.producer.get(add.input[0]) if add is not None and add.op_type == "Add" else None
    if matmul is None or matmul.op_type != "MatMul" or len(split.output) != 3:
        return None
    weight, bias = graph.constant(matmul.input[1]), graph.constant(add.input[1])
    if weight is None or bias is None or weight.ndim != 2 or weight.shape[1] != 3 * weight.shape[0]:
        return None
    channels = weight.shape[0]
    if bias.shape != (3 * channels,) or graph.only_reader(matmul.output[0], "Add") is not add:
        return None
    if _attribute(split, "axis", 0) not in (2, -1) or not _equal_thirds(graph, split, channels):
        return None
    q, k, v = (_heads_view(graph, name, perm) for name, perm in zip(split.output, ([0, 2, 1, 3], [0, 2, 3, 1], [0, 2, 1, 3])))
    if not (q and k and v) or len({q[2], k[2], v[2]}) != 1 or channels % q[2]:
        return None
    heads = q[2]
    scores = graph.only_reader(q[1].output[0], "MatMul")
    if scores is None or list(scores.input) != [q[1].output[0], k[1].output[0]]:
        return None
    scaled = graph.only_reader(scores.output[0], "Div")
    scale = graph.constant(scaled.input[1]) if scaled is not None else None
    if scale is None or scale.size != 1 or not np.isclose(scale.reshape(-1)[0], np.sqrt(channels // heads), rtol=1e-5):
        return None
    masked, mask_nodes = _causal_mask(graph, scaled.output[0])
    softmax = graph.only_reader(masked, "Softmax")
    if softmax is None or _attribute(softmax, "axis", -1) not in (-1, 3):
        return None
    weighted = graph.only_reader(softmax.output[0], "MatMul")
    if weighted is None or list(weighted.input) != [softmax.output[0], v[1].output[0]]:
        return None
    merged = graph.only_reader(weighted.output[0], "Transpose")
    if merged is None or _attribute(merged, "perm") != [0, 2, 1, 3]:
        return None
    out = graph.only_reader(merged.output[0], "Reshape")
    if out is None:
        return None
    nodes = [matmul, add, split, *q[:2], *k[:2], *v[:2], scores, scaled, *mask_nodes, softmax, weighted, merged, out]
    return _Block(nodes, matmul.input[0], matmul.input[1], add.input[1], heads, bool(mask_nodes), split.name or matmul.name)


def _heads_view(graph: _Graph, name: str, perm: list[int]):
    """(Reshape, Transpose, heads) where `name` is viewed as (B, T, H, D) and transposed by `perm`."""
    reshape = graph.only_reader(name, "Reshape")
    transpose = graph.only_reader(reshape.output[0], "Transpose") if reshape is not None else None
    if transpose is None or _attribute(transpose, "perm") != perm:
        return None
    heads = _heads(graph, reshape.input[1])
    return (reshape, transpose, heads) if heads else None


def _heads(graph: _Graph, shape_name: str) -> int | None:
    """H of a (B, T, H, D) shape: a constant, or torch's Concat of the input's dims and the constants H and D."""
    shape = graph.constant(shape_name)
    if shape is not None:
        return int(shape[2]) if shape.shape == (4,) and shape[2] > 0 else None
    concat = graph.producer.get(shape_name)
    if concat is None or concat.op_type != "Concat" or len(concat.input) != 4:
        return None
    heads = graph.constant(concat.input[2])
    return int(heads.reshape(-1)[0]) if heads is not None and heads.size == 1 and heads.reshape(-1)[0] > 0 else None


def _causal_mask(graph: _Graph, scores: str) -> tuple[str, list]:
    """(the masked scores, [the Where]) for Where(Not(mask), -inf, scores) reading `scores`, as torch.onnx
    writes it, or Where(mask, scores, -inf), as ONNX Runtime's optimizer leaves it, where the mask is
    Slice(...Slice(tril)); (scores, []) when no Where reads them. The mask's own nodes may serve other
    blocks: they go when nothing reads them any more."""
    where = graph.only_reader(scores, "Where")
    if where is None:
        return scores, []
    condition, kept, filled = where.input
    negate = graph.producer.get(condition)
    if filled == scores and negate is not None and negate.op_type == "Not":
        mask, fill = negate.input[0], graph.constant(kept)
    elif kept == scores:
        mask, fill = condition, graph.constant(filled)
    else:
        return scores, []
    if fill is None or fill.size != 1 or not fill.reshape(-1)[0] <= -1e4:
        return scores, []
    while (node := graph.producer.get(mask)) is not None and node.op_type == "Slice":
        starts = graph.constant(node.input[1])
        if starts is None or starts.any():  # a corner other than the top left is not a causal mask
            return scores, []
        mask = node.input[0]
    tril = graph.constant(mask)
    if tril is None or tril.ndim != 2 or not np.array_equal(tril.astype(bool), np.tril(np.ones(tril.shape, dtype=bool))):
        return scores, []
    return where.output[0], [where]


def _equal_thirds(graph: _Graph, split, channels: int) -> bool:
    if len(split.input) > 1 and split.input[1]:
        sizes = graph.constant(split.input[1])
        return sizes is not None and list(sizes) == [channels] * 3
    return _attribute(split, "split", None) in (None, [channels] * 3)


def _attribute(node, name: str, default=None):
    for attribute in node.attribute:
        if attribute.name == name:
            return helper.get_attribute_value(attribute)
    return default


def _without_dead_nodes(nodes: list, outputs: set[str]) -> list:
    """`nodes` less those whose outputs nothing reads (the fused blocks' masks and shape arithmetic), in order."""
    live = set(outputs)
    kept = []
    for node in reversed(nodes):
        if any(out in live for out in node.output):
            kept.append(node)
            live.update(_read_names(node))
    return kept[::-1]


def _read_names(node: onnx.NodeProto):
    """What `node` reads, with what the graphs in its attributes (If, Loop, Scan) read from outside them."""
    yield from node.input
    for attribute in node.attribute:
        for graph in [attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else attribute.graphs:
            for inner in graph.node:
                yield from _read_names(inner)
