"""Lower ONNX LSTM, GRU and RNN nodes for TVM: one whole-sequence kernel each on CPUs, else unrolled.

TVM 0.27's ONNX importer has no converter for LSTM, GRU or RNN. This module rewrites each
such node, as the ONNX spec defines it, before the graph reaches `from_onnx`, in one of two ways:
- `kernels=True` (CPU targets, float32): the weights packed for `rnn_kernel`'s TIR kernel (ONNX
  ops on constants, folded at compile time) and one `ai.dltk` RecurrentSequence node, which
  `rnn_kernel.converters()` imports as a call of that kernel: the time loop runs inside one call.
- otherwise: MatMul/Add/Mul/activations/Slice/Squeeze/Concat/Where nodes, one copy of the cell per
  time step (GPU targets, where dlight schedules those ops, and float64/float16 nodes).

The unrolled form is plain ONNX, and stays the reference the kernel path is checked against.

Why the unrolled form is an ONNX-to-ONNX rewrite rather than converters registered into TVM's
frontend table (the kernel path does register one, for its own node, as a measured exception:
the unrolled graph ran 2-4 kernels per time step and lost to ONNX Runtime's fused kernel):
- It uses only public, versioned ONNX: the frontend's converter table and its `bb`/`params`
  calling convention are TVM internals that change between releases.
- The rewritten graph is still ONNX, so ONNX Runtime can run it and check the rewrite alone,
  and `dltk compile` verifies the compiled result against ONNX Runtime on the original graph.
- It stays importer-agnostic: any ONNX consumer lacking these ops can use it.

Unrolling needs the sequence length to be static; the batch may stay symbolic, because no
emitted op needs the batch size: absent initial states are not materialised as zeros, the
first step simply omits the terms they would contribute.

Supported: forward, reverse and bidirectional; optional B, sequence_lens, initial_h,
initial_c and P (peepholes); any subset of the outputs; layout 0 and 1; clip; LSTM
input_forget; GRU linear_before_reset 0 and 1; every activation the spec lists (names
matched case-insensitively, alpha/beta consumed in order by the activations that take them,
defaults as ONNX Runtime uses them). Anything else raises `DltkError` naming the node.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from toolkit.errors import DltkError
from toolkit.optimize import rnn_kernel

MIN_OPSET = 9  # Where (sequence_lens masking) needs 9

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}  # gate blocks stacked in W, R and each half of B
DEFAULT_ACTIVATIONS = {"LSTM": ("Sigmoid", "Tanh", "Tanh"), "GRU": ("Sigmoid", "Tanh"), "RNN": ("Tanh",)}
ATTRIBUTES = {
    "common": {"activation_alpha", "activation_beta", "activations", "clip", "direction", "hidden_size", "layout"},
    "LSTM": {"input_forget"},
    "GRU": {"linear_before_reset"},
    "RNN": set(),
}

# name (lower case) -> (ONNX op or None when composed, default alpha, default beta), as ONNX Runtime has them
ACTIVATIONS = {
    "sigmoid": ("Sigmoid", None, None),
    "tanh": ("Tanh", None, None),
    "relu": ("Relu", None, None),
    "softsign": ("Softsign", None, None),
    "softplus": ("Softplus", None, None),
    "leakyrelu": ("LeakyRelu", 0.01, None),
    "thresholdedrelu": ("ThresholdedRelu", 1.0, None),
    "elu": ("Elu", 1.0, None),
    "hardsigmoid": ("HardSigmoid", 0.2, 0.5),
    "affine": (None, 1.0, 0.0),  # alpha * x + beta
    "scaledtanh": (None, 1.0, 1.0),  # alpha * tanh(beta * x)
}


def lower_recurrent(model: onnx.ModelProto, kernels: bool = False) -> onnx.ModelProto:
    """A copy of `model` with every top-level LSTM/GRU/RNN node replaced; the model itself when it has none.

    kernels: a float32 node becomes its packed weights and one RecurrentSequence node, which TVM
    imports as a whole-sequence CPU kernel (`rnn_kernel`); otherwise, and for other types, the
    node is unrolled over time into standard ONNX ops that any consumer runs.
    """
    if not any(_is_recurrent(n) for n in model.graph.node):
        return model
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    types = _known_types(model)
    lowered = onnx.ModelProto()
    lowered.CopyFrom(model)
    nodes, initializers = [], []
    for index, node in enumerate(model.graph.node):
        if not _is_recurrent(node):
            nodes.append(node)
            continue
        emitter = _Emitter(node.name or f"{node.op_type}_{index}", opset)
        _lower_node(node, _describe(node, index), opset, types, emitter, kernels)
        nodes += emitter.nodes
        initializers += emitter.initializers
    if any(n.domain == rnn_kernel.DOMAIN for n in nodes):
        lowered.opset_import.append(helper.make_opsetid(rnn_kernel.DOMAIN, 1))
    del lowered.graph.node[:]
    lowered.graph.node.extend(nodes)
    lowered.graph.initializer.extend(initializers)
    return lowered


def sequence_length_limits(model: onnx.ModelProto) -> dict[str, int]:
    """Graph inputs read as some recurrent node's sequence_lens, each with the longest length it may hold.

    Random test inputs must stay within these: ONNX Runtime refuses lengths over the sequence length.
    """
    graph_inputs = {i.name for i in model.graph.input}
    readers = [n for n in model.graph.node if _is_recurrent(n) and len(n.input) > 4 and n.input[4] in graph_inputs]
    types = _known_types(model) if readers else {}
    limits = {}
    for node in readers:
        layout = next((a.i for a in node.attribute if a.name == "layout"), 0)
        dims = _static_dims(types, node.input[0])
        if dims and len(dims) == 3 and dims[layout]:
            limits[node.input[4]] = min(limits.get(node.input[4], dims[layout]), dims[layout])
    return limits


def _is_recurrent(node: onnx.NodeProto) -> bool:
    return node.op_type in GATES and node.domain in ("", "ai.onnx")


def _describe(node: onnx.NodeProto, index: int) -> str:
    return f"{node.op_type} node '{node.name}'" if node.name else f"{node.op_type} node #{index} (unnamed)"


def _known_types(model: onnx.ModelProto) -> dict[str, onnx.TypeProto]:
    """Type and shape of every value ONNX shape inference can tell, initializers included."""
    try:
        # data_prop follows Shape -> Slice -> Concat -> Reshape, as exporters emit between stacked layers
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # a graph inference cannot follow: fall back to what the file declares
        inferred = model
    graph = inferred.graph
    types = {v.name: v.type for v in (*graph.input, *graph.value_info, *graph.output)}
    for tensor in graph.initializer:
        types[tensor.name] = helper.make_tensor_type_proto(tensor.data_type, list(tensor.dims))
    return types


@dataclass(frozen=True)
class _Activation:
    kind: str  # lower-case name from ACTIVATIONS
    alpha: float | None
    beta: float | None


def _activations(node, what: str, attrs: dict, directions: int) -> list[list[_Activation]]:
    """The activation functions of each direction, e.g. [[f, g, h]] or [[f, g, h], [fB, gB, hB]]."""
    per_direction = len(DEFAULT_ACTIVATIONS[node.op_type])
    names = [a.decode() if isinstance(a, bytes) else a for a in attrs.get("activations", [])]
    if not names:
        names = list(DEFAULT_ACTIVATIONS[node.op_type]) * directions
    if len(names) != per_direction * directions:
        raise DltkError(
            f"{what} has {len(names)} activations, expected {per_direction * directions}",
            f"give {per_direction} per direction, as the ONNX spec asks",
        )
    alphas, betas = list(attrs.get("activation_alpha", [])), list(attrs.get("activation_beta", []))
    functions = []
    for name in names:
        kind = name.lower()
        if kind not in ACTIVATIONS:
            raise DltkError(
                f"{what} uses activation '{name}', which dltk cannot lower",
                f"use one of the ONNX RNN activations: {', '.join(sorted(ACTIVATIONS))}",
            )
        _, default_alpha, default_beta = ACTIVATIONS[kind]
        alpha = (alphas.pop(0) if alphas else default_alpha) if default_alpha is not None else None
        beta = (betas.pop(0) if betas else default_beta) if default_beta is not None else None
        functions.append(_Activation(kind, alpha, beta))
    return [functions[d * per_direction : (d + 1) * per_direction] for d in range(directions)]


def _static_dims(types, name: str) -> list[int | None] | None:
    if name not in types or not types[name].tensor_type.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else None for d in types[name].tensor_type.shape.dim]


def _lower_node(node, what: str, opset: int, types, out: _Emitter, kernels: bool) -> None:
    op = node.op_type
    if opset < MIN_OPSET:
        raise DltkError(f"{what}: dltk lowers recurrent nodes for opset {MIN_OPSET} and later, the model has {opset}",
                        "re-export with a newer opset or convert it with onnx.version_converter")
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    unknown = set(attrs) - ATTRIBUTES["common"] - ATTRIBUTES[op]
    if unknown:
        raise DltkError(f"{what} has attributes the ONNX spec does not define for {op}: {', '.join(sorted(unknown))}",
                        "re-export the model with a standard exporter")
    inputs = list(node.input) + [""] * (8 - len(node.input))
    x, w, r, bias, sequence_lens, initial_h = inputs[:6]
    initial_c, peepholes = (inputs[6], inputs[7]) if op == "LSTM" else ("", "")
    outputs = list(node.output) + [""] * (3 - len(node.output))

    direction = attrs.get("direction", b"forward")
    direction = direction.decode() if isinstance(direction, bytes) else direction
    if direction not in ("forward", "reverse", "bidirectional"):
        raise DltkError(f"{what} has direction '{direction}'", "use forward, reverse or bidirectional")
    directions = 2 if direction == "bidirectional" else 1
    layout = attrs.get("layout", 0)
    if layout not in (0, 1):
        raise DltkError(f"{what} has layout {layout}", "the ONNX spec allows 0 or 1")
    time_axis = layout  # X: (T, B, I), or (B, T, I) for layout 1
    direction_axis = layout  # initial_h, Y_h, Y_c: (D, B, H), or (B, D, H) for layout 1

    x_dims = _static_dims(types, x)
    if x_dims is None or len(x_dims) != 3 or not x_dims[time_axis]:
        raise DltkError(
            f"{what}: its sequence length is not a fixed number, and dltk unrolls recurrent layers over time",
            "export the model with a fixed sequence length; the batch may stay dynamic",
        )
    steps = x_dims[time_axis]
    hidden = attrs.get("hidden_size")
    if hidden is None:
        r_dims = _static_dims(types, r)
        hidden = r_dims[2] if r_dims and len(r_dims) == 3 and r_dims[2] else None
        if hidden is None:
            raise DltkError(f"{what} has no hidden_size and R's shape is unknown", "set the hidden_size attribute")
    elem_type = types[x].tensor_type.elem_type
    if elem_type not in (TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16):
        raise DltkError(f"{what} takes {TensorProto.DataType.Name(elem_type)} input", "use float32")
    out.dtype = helper.tensor_dtype_to_np_dtype(elem_type)

    cell = _Cell(
        op=op,
        gates=GATES[op],
        hidden=hidden,
        clip=attrs.get("clip"),
        input_forget=bool(attrs.get("input_forget", 0)),
        linear_before_reset=bool(attrs.get("linear_before_reset", 0)),
    )
    activations = _activations(node, what, attrs, directions)
    features = x_dims[2]
    if kernels and elem_type == TensorProto.FLOAT and features:
        spec = rnn_kernel.KernelSpec(
            op=op, gates=cell.gates, hidden=hidden, features=features, steps=steps, directions=directions,
            reverse=direction == "reverse", layout=layout, clip=cell.clip, input_forget=cell.input_forget,
            linear_before_reset=cell.linear_before_reset,
            activations=tuple(tuple((a.kind, a.alpha, a.beta) for a in acts) for acts in activations),
            lengths=bool(sequence_lens), initial_h=bool(initial_h), initial_c=bool(initial_c), peepholes=bool(peepholes),
        )
        _emit_sequence_node(out, spec, [x, w, r, bias, sequence_lens, initial_h, initial_c, peepholes], outputs)
        return

    # (B, 1) masks, true while step t is inside a sequence: states stop, outputs are zero past the end
    masks = None
    if sequence_lens:
        lengths = out.unsqueeze(out.op("Cast", [sequence_lens], to=TensorProto.INT64), [1])  # (B, 1)
        masks = [out.op("Less", [out.const(np.array(t, np.int64)), lengths]) for t in range(steps)]
        zero = out.scalar(0)

    y_parts, h_parts, c_parts = [], [], []
    for d in range(directions):
        reverse = direction == "reverse" or d == 1
        params = _direction_params(out, cell, d, w, r, bias, peepholes)
        # inputs projected once for every step: (T, B, G*H), or (B, T, G*H) for layout 1
        projected = out.op("MatMul", [x, params.w_t])
        if params.x_bias is not None:
            projected = out.op("Add", [projected, params.x_bias])
        h = out.step(initial_h, d, direction_axis) if initial_h else None
        c = out.step(initial_c, d, direction_axis) if initial_c else None
        per_step = [None] * steps
        for t in reversed(range(steps)) if reverse else range(steps):
            x_gates = [out.step(projected, t, time_axis, (k * hidden, (k + 1) * hidden)) for k in range(cell.gates)]
            new_h, new_c = cell.step(out, x_gates, h, c, params, activations[d])
            if masks is None:
                h, c, per_step[t] = new_h, new_c, new_h
            else:
                h = out.op("Where", [masks[t], new_h, h if h is not None else zero])
                if new_c is not None:
                    c = out.op("Where", [masks[t], new_c, c if c is not None else zero])
                per_step[t] = out.op("Where", [masks[t], new_h, zero])
        if masks is not None:  # as ONNX Runtime does, an empty sequence ends in zero states, not the initial ones
            h = out.op("Where", [masks[0], h, zero])
            c = out.op("Where", [masks[0], c, zero]) if c is not None else None
        y_parts.append(per_step)
        h_parts.append(h)
        c_parts.append(c)

    if outputs[0]:  # Y: (T, D, B, H), or (B, T, D, H) for layout 1
        step_axes = [0, 1] if layout == 0 else [1, 2]
        steps_stacked = [
            out.concat([out.unsqueeze(y_parts[d][t], step_axes) for d in range(directions)], axis=step_axes[1])
            for t in range(steps)
        ]
        out.concat(steps_stacked, axis=step_axes[0], name=outputs[0])
    if outputs[1]:
        out.concat([out.unsqueeze(h, [direction_axis]) for h in h_parts], axis=direction_axis, name=outputs[1])
    if op == "LSTM" and outputs[2]:
        out.concat([out.unsqueeze(c, [direction_axis]) for c in c_parts], axis=direction_axis, name=outputs[2])


def _emit_sequence_node(out: _Emitter, spec, inputs, outputs) -> None:
    """The node as its weights packed for the kernel (constants once TVM folds them) and one RecurrentSequence."""
    x, w, r, bias, sequence_lens, initial_h, initial_c, peepholes = inputs
    dirs, gates, hidden = spec.directions, spec.gates, spec.hidden
    pad = rnn_kernel.padded(hidden) - hidden

    def padded(value, shape):  # reshaped to `shape`, hidden units (axis 2) padded with zeros to whole vectors
        value = out.op("Reshape", [value, out.const(np.array(shape, np.int64))])
        if not pad:
            return value
        return out.op("Concat", [value, out.const(np.zeros([*shape[:2], pad, *shape[3:]], out.dtype))], axis=2)

    def packed(weights, rows):  # (D, G*H, rows) -> (D, rows, G, Hp)
        return out.op("Transpose", [padded(weights, [dirs, gates, hidden, rows])], perm=[0, 3, 1, 2])

    r_bias_h = None
    if bias:
        w_bias, r_bias = (out.slice(bias, k * gates * hidden, (k + 1) * gates * hidden, 1) for k in (0, 1))
        if spec.op == "GRU" and spec.linear_before_reset:  # Rbh is multiplied by the reset gate
            r_bias_h = out.slice(r_bias, 2 * hidden, 3 * hidden, 1)
            keep = np.concatenate([np.ones(2 * hidden), np.zeros(hidden)]).astype(out.dtype)
            r_bias = out.op("Mul", [r_bias, out.const(keep)])
        total = out.op("Add", [w_bias, r_bias])
    else:
        total = out.const(np.zeros((dirs, gates * hidden), out.dtype))
    if spec.op == "GRU" and spec.linear_before_reset and r_bias_h is None:
        r_bias_h = out.const(np.zeros((dirs, hidden), out.dtype))
    node_inputs = [
        x,
        packed(w, spec.features),
        packed(r, hidden),
        padded(total, [dirs, gates, hidden]),
        padded(out.unsqueeze(r_bias_h, [1]), [dirs, 1, hidden]) if r_bias_h else "",
        out.op("Cast", [sequence_lens], to=TensorProto.INT32) if sequence_lens else "",
        initial_h,
        initial_c,
        padded(peepholes, [dirs, 3, hidden]) if peepholes else "",
    ]
    names = [name or out.unused(tag) for name, tag in zip(outputs, ("Y", "Y_h", "Y_c"))]
    out.op(rnn_kernel.OP_TYPE, node_inputs, outputs=3, names=names, domain=rnn_kernel.DOMAIN, spec=spec.to_json())


@dataclass
class _Params:
    w_t: str  # (I, G*H)
    r_t: str  # (H, G*H): all gates' recurrence in one MatMul; for a GRU without linear_before_reset only z and r, (H, 2H)
    r_h_t: str | None  # that GRU's candidate (H, H), applied apart because the reset gate comes first
    x_bias: str | None  # (G*H,) added to the input projection
    r_bias_h: str | None  # GRU with linear_before_reset: Rbh stays inside the reset product
    peepholes: list[str] | None  # LSTM: p_i, p_o, p_f, each (H,)


def _direction_params(out: _Emitter, cell: _Cell, d: int, w, r, bias, peepholes) -> _Params:
    index = out.const(np.array(d, np.int64))
    hidden = cell.hidden
    w_t = out.op("Transpose", [out.op("Gather", [w, index], axis=0)], perm=[1, 0])
    r_d = out.op("Gather", [r, index], axis=0)  # (G*H, H)
    r_h_t = None
    if cell.op == "GRU" and not cell.linear_before_reset:
        r_d, r_h = out.split(r_d, [2 * hidden, hidden], axis=0)
        r_h_t = out.op("Transpose", [r_h], perm=[1, 0])
    r_t = out.op("Transpose", [r_d], perm=[1, 0])
    x_bias = r_bias_h = None
    if bias:
        w_bias, r_bias = out.split(out.op("Gather", [bias, index], axis=0), [cell.gates * hidden] * 2, axis=0)
        if cell.op == "GRU" and cell.linear_before_reset:
            # Rbh is multiplied by the reset gate, so only Rbz and Rbr join the input side
            keep = np.concatenate([np.ones(2 * hidden), np.zeros(hidden)]).astype(out.dtype)
            r_bias_h = out.split(r_bias, [2 * hidden, hidden], axis=0)[1]
            r_bias = out.op("Mul", [r_bias, out.const(keep)])
        x_bias = out.op("Add", [w_bias, r_bias])
    p = None
    if peepholes:
        p = out.split(out.op("Gather", [peepholes, index], axis=0), [hidden] * 3, axis=0)
    return _Params(w_t, r_t, r_h_t, x_bias, r_bias_h, p)


@dataclass(frozen=True)
class _Cell:
    op: str
    gates: int
    hidden: int
    clip: float | None
    input_forget: bool
    linear_before_reset: bool

    def step(self, out: _Emitter, x_gates, h, c, params: _Params, activations):
        """One time step: (x's gate inputs, H_{t-1}, C_{t-1}) -> (H_t, C_t); None states are zeros."""
        # Gates whose recurrence is one H_{t-1} @ R^T: all but a GRU's candidate when the reset gate
        # multiplies H before R (with linear_before_reset it multiplies the product: one MatMul per step).
        fused = 2 if self.op == "GRU" and not self.linear_before_reset else self.gates
        if h is None:
            h_gates = [None] * fused
        else:
            h_gates = out.split(out.op("MatMul", [h, params.r_t]), [self.hidden] * fused, axis=1)

        def activate(fn, *terms):
            total = out.add(*terms)
            if self.clip is not None:
                total = out.op("Min", [out.op("Max", [total, out.scalar(-self.clip)]), out.scalar(self.clip)])
            return out.activation(fn, total)

        if self.op == "RNN":
            (f,) = activations
            return activate(f, x_gates[0], h_gates[0]), None

        if self.op == "GRU":  # gates z, r, h
            f, g = activations
            z = activate(f, x_gates[0], h_gates[0])
            reset = activate(f, x_gates[1], h_gates[1])
            if self.linear_before_reset:  # h~ = g(x + r * (H @ Rh^T + Rbh))
                inner = out.add(h_gates[2], params.r_bias_h)
                candidate = activate(g, x_gates[2], out.op("Mul", [reset, inner]) if inner else None)
            else:  # h~ = g(x + (r * H) @ Rh^T)
                reset_h = out.op("MatMul", [out.op("Mul", [reset, h]), params.r_h_t]) if h is not None else None
                candidate = activate(g, x_gates[2], reset_h)
            new_h = out.op("Mul", [out.op("Sub", [out.scalar(1), z]), candidate])  # (1 - z) * h~ + z * H_{t-1}
            if h is not None:
                new_h = out.op("Add", [new_h, out.op("Mul", [z, h])])
            return new_h, None

        f, g, act_h = activations  # LSTM: gates i, o, f, c
        peep = params.peepholes

        def peephole(k, cell_state):
            return out.op("Mul", [peep[k], cell_state]) if peep and cell_state is not None else None

        i = activate(f, x_gates[0], h_gates[0], peephole(0, c))
        if self.input_forget:
            forget = out.op("Sub", [out.scalar(1), i])
        else:
            forget = activate(f, x_gates[2], h_gates[2], peephole(2, c))
        candidate = activate(g, x_gates[3], h_gates[3])
        new_c = out.op("Mul", [i, candidate])
        if c is not None:
            new_c = out.op("Add", [out.op("Mul", [forget, c]), new_c])
        o = activate(f, x_gates[1], h_gates[1], peephole(1, new_c))
        return out.op("Mul", [o, out.activation(act_h, new_c)]), new_c


class _Emitter:
    """Appends nodes and constants with names unique to one recurrent node."""

    def __init__(self, prefix: str, opset: int):
        self.prefix, self.opset = prefix, opset
        self.dtype = np.float32
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0
        self._scalars: dict[float, str] = {}

    def _name(self, tag: str) -> str:
        self._count += 1
        return f"{self.prefix}/{tag}_{self._count}"

    def op(self, op_type: str, inputs, outputs: int = 1, name: str | None = None, names: list[str] | None = None, **attrs):
        names = names or ([name] if name else [self._name(op_type) for _ in range(outputs)])
        self.nodes.append(helper.make_node(op_type, list(inputs), names, name=self._name(op_type + "_node"), **attrs))
        return names[0] if outputs == 1 else names

    def unused(self, tag: str) -> str:
        """A name for an output nobody reads."""
        return self._name(f"unused_{tag}")

    def const(self, value: np.ndarray) -> str:
        name = self._name("const")
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def scalar(self, value: float) -> str:
        """A scalar of the node's float type, made once however often it is used."""
        if value not in self._scalars:
            self._scalars[value] = self.const(np.array(value, self.dtype))
        return self._scalars[value]

    def add(self, *terms):
        present = [t for t in terms if t is not None]
        if not present:
            return None
        total = present[0]
        for term in present[1:]:
            total = self.op("Add", [total, term])
        return total

    def split(self, value: str, sizes: list[int], axis: int) -> list[str]:
        """Consecutive parts along `axis`, as one Slice each: TVM fuses a Slice into the gate arithmetic
        that reads it, while a Split is a kernel of its own (two per time step)."""
        if len(sizes) == 1:
            return [value]
        bounds = np.cumsum([0, *sizes])
        return [self.slice(value, int(start), int(end), axis) for start, end in zip(bounds[:-1], bounds[1:])]

    def slice(self, value: str, start, end, axis) -> str:
        """value[start:end] along `axis`; or along several, each given as a list."""
        starts, ends, axes = ([v] if isinstance(v, int) else list(v) for v in (start, end, axis))
        if self.opset < 10:
            return self.op("Slice", [value], starts=starts, ends=ends, axes=axes)
        return self.op("Slice", [value, *(self.const(np.array(v, np.int64)) for v in (starts, ends, axes))])

    def step(self, value: str, t: int, axis: int, gate: tuple[int, int] | None = None) -> str:
        """value[t] along `axis`, as a Slice and a Squeeze: TVM imports a Gather with its index
        normalised through shape ops at run time, a handful of kernels per step.

        gate: (start, end) along the last axis as well, in the same Slice: one Slice per gate
        fuses into the kernel that reads it, while a step's slice read by two kernels (an LSTM's
        cell state and output gate) is a kernel of its own."""
        if gate is None:
            sliced = self.slice(value, t, t + 1, axis)
        else:
            sliced = self.slice(value, [t, gate[0]], [t + 1, gate[1]], [axis, 2])
        if self.opset < 13:
            return self.op("Squeeze", [sliced], axes=[axis])
        return self.op("Squeeze", [sliced, self.const(np.array([axis], np.int64))])

    def unsqueeze(self, value: str, axes: list[int]) -> str:
        if self.opset < 13:
            return self.op("Unsqueeze", [value], axes=axes)
        return self.op("Unsqueeze", [value, self.const(np.array(axes, np.int64))])

    def concat(self, values: list[str], axis: int, name: str | None = None) -> str:
        if len(values) == 1:
            return self.op("Identity", values, name=name)
        return self.op("Concat", values, name=name, axis=axis)

    def activation(self, fn: _Activation, x: str) -> str:
        op_type = ACTIVATIONS[fn.kind][0]
        if fn.kind == "affine":
            return self.op("Add", [self.op("Mul", [x, self.scalar(fn.alpha)]), self.scalar(fn.beta)])
        if fn.kind == "scaledtanh":
            return self.op("Mul", [self.op("Tanh", [self.op("Mul", [x, self.scalar(fn.beta)])]), self.scalar(fn.alpha)])
        attrs = {}
        if fn.alpha is not None:
            attrs["alpha"] = fn.alpha
        if fn.beta is not None:
            attrs["beta"] = fn.beta
        return self.op(op_type, [x], **attrs)
