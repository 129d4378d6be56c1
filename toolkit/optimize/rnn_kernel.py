"""One TIR kernel per ONNX LSTM / GRU / RNN node, the whole sequence in one call, for CPUs.

`rnn.lower_recurrent(model, kernels=True)` packs a float32 node's weights in ONNX (folded into
constants by TVM) and replaces the node with one `ai.dltk` RecurrentSequence node, which the
converter here turns into a `call_tir` of a PrimFunc written for it:

    for (direction, group of 1, 2 or 4 sequences) in parallel:  # independent; all cores from PARALLEL_WORK up
        h, c = initial states (or zeros)            # one row per sequence, in L1
        for each time step t (backwards for a reverse direction):
            for each block of hidden units:          # JB x 8 lanes x G gates x the group's sequences
                gates = bias + x_t @ W^T + h @ R^T   # broadcast-FMA, each weight vector loaded once for the group,
                                                     # in passes over the gates of at most 8 accumulators
                h_new, c_new = the cell's gate math  # activations as vector TIR (fast_math)
            h, c = h_new, c_new where t < sequence_lens[b]; Y[t] = h_new there, else 0

Why a whole-sequence kernel: the unrolled graph ran 2-4 kernels per time step (the recurrent
matmul, then gate arithmetic), each a VM call with its own allocation, while ONNX Runtime runs
one fused kernel per node. A zoo LSTM step is 48x192 multiply-adds per sequence: the calls, not
the arithmetic, were the time. The weights are re-laid out gate-major and padded to whole
vectors at compile time: W (D, I, G, Hp), R (D, H, G, Hp), so each gate's block is one vector
load.

TVM 0.27's ONNX importer has no hook for custom converters: `converters()` adds ours to the
frontend's table (`_get_convert_map`, a TVM internal) while `from_onnx` runs. Targets other than
CPUs keep the unrolled graph (`rnn.lower_recurrent(model)`), which every ONNX consumer can run.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass

DOMAIN = "ai.dltk"
OP_TYPE = "RecurrentSequence"
LANES = 8  # float32 lanes of an AVX2 register; LLVM splits or joins them for other vector widths
ACCUMULATORS = 8  # vector accumulators in flight per block: FMA latency x throughput on x86 cores
# Multiply-adds per call from which the kernel runs on every core (about 80 us on one Zen 3 core).
# Below it, one core: the pool's wake-up and wait for every worker cost more than they save, and
# on a busy machine a descheduled worker stalls the call (measured on the zoo's LSTM and GRU at
# batch 8, 0.7-1.2M multiply-adds: one core ran 0.77x ONNX Runtime's p50, all cores 0.82-0.85x).
PARALLEL_WORK = 1 << 21
# Sequences computed side by side from this batch up, each weight vector loaded serving all of them
# (with gates in two passes, so their accumulators stay in registers): against two, 0.86-0.89x the
# zoo LSTM's kernel time at batch 8 on a Zen 3; eight were slower than four (broadcast loads).
WIDE_GROUP = 4


@dataclass(frozen=True)
class KernelSpec:
    """What a RecurrentSequence node computes; travels as the node's JSON `spec` attribute."""

    op: str  # LSTM, GRU or RNN
    gates: int
    hidden: int
    features: int  # I, X's last dim
    steps: int
    directions: int
    reverse: bool  # a single direction run backwards
    layout: int
    clip: float | None
    input_forget: bool
    linear_before_reset: bool
    activations: tuple  # per direction: ((kind, alpha, beta), ...)
    lengths: bool  # inputs present
    initial_h: bool
    initial_c: bool
    peepholes: bool

    def to_json(self) -> str:
        return json.dumps(self.__dict__)

    @classmethod
    def from_json(cls, text: str) -> KernelSpec:
        fields = json.loads(text)
        fields["activations"] = tuple(tuple(tuple(a) for a in direction) for direction in fields["activations"])
        return cls(**fields)


def padded(hidden: int) -> int:
    """Hidden units rounded up to whole vectors: the packed weights' gate width."""
    return -(-hidden // LANES) * LANES


def _block_vectors(spec: KernelSpec, sequences: int) -> int:
    """Vectors of hidden units computed together for `sequences` sequences: enough independent
    accumulators to keep the FMA units busy, a divisor of the row so no block is partial."""
    vectors = padded(spec.hidden) // LANES
    rows = spec.gates + (1 if spec.op == "GRU" and spec.linear_before_reset else 0)
    wanted = max(1, ACCUMULATORS // (rows * sequences))
    return max(d for d in range(1, vectors + 1) if vectors % d == 0 and d <= wanted)


def build_kernel(spec: KernelSpec):
    """The PrimFunc for one node: inputs (X, W, R, bias[, Rbh][, lengths][, h0][, c0][, P]),
    outputs (Y, Y_h[, Y_c]) in the node's layout; the batch is symbolic."""
    from tvm import tirx
    from tvm.script.ir_builder import IRBuilder
    from tvm.script.ir_builder import tirx as T

    f32 = "float32"
    steps, hidden, hp, gates, dirs = spec.steps, spec.hidden, padded(spec.hidden), spec.gates, spec.directions
    lstm, gru = spec.op == "LSTM", spec.op == "GRU"
    gru_reset_first = gru and not spec.linear_before_reset  # (r * h) @ Rh: a second pass per step
    rows = gates + 1 if gru and spec.linear_before_reset else gates  # accumulators per lane: + the candidate's H @ Rh

    def const(value):
        return tirx.const(value, f32)

    with IRBuilder() as builder:
        with T.prim_func():
            T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
            batch = tirx.Var("batch", "int64")

            def arg(name, shape, dtype=f32):
                return T.arg(name, T.buffer(shape, dtype, layout=None))  # no layout: RenewDefs copies would keep the old batch var in it

            def by_layout(a, b, *rest):  # layout 1 swaps the first two axes of X, Y, the states
                return (b, a, *rest) if spec.layout else (a, b, *rest)

            x = arg("X", by_layout(steps, batch, spec.features))
            w = arg("W", (dirs, spec.features, gates, hp))
            r = arg("R", (dirs, hidden, gates, hp))
            bias = arg("B", (dirs, gates, hp))
            r_bias_h = arg("Rbh", (dirs, 1, hp)) if gru and spec.linear_before_reset else None
            lengths = arg("lengths", (batch,), "int32") if spec.lengths else None
            h0 = arg("h0", by_layout(dirs, batch, hidden)) if spec.initial_h else None
            c0 = arg("c0", by_layout(dirs, batch, hidden)) if spec.initial_c else None
            peep = arg("P", (dirs, 3, hp)) if spec.peepholes else None
            y = arg("Y", (batch, steps, dirs, hidden) if spec.layout else (steps, dirs, batch, hidden))
            y_h = arg("Y_h", by_layout(dirs, batch, hidden))
            y_c = arg("Y_c", by_layout(dirs, batch, hidden)) if lstm else None

            def sequences(index, count):
                """Sequences count*k .. count*k+count-1 of one direction, start to end, side by side: each
                weight vector loaded serves all of them. A last group past the batch repeats the last
                sequence, which writes the same values twice."""
                groups = (batch + count - 1) // count
                d = index // groups
                first = (index % groups) * count
                seq = [tirx.min(first + i, batch - 1) if count > 1 else first for i in range(count)]
                block = _block_vectors(spec, count)
                blocks = hp // (block * LANES)

                def local(*shape):
                    return T.alloc_buffer(shape, f32, scope="local")

                h, h_new = local(count, hp), local(count, hp)
                c, c_new = (local(count, hp), local(count, hp)) if lstm else (None, None)
                z_gate, reset_h = (local(count, hp), local(count, hp)) if gru_reset_first else (None, None)
                acc = local(count, rows, block, LANES)

                def state_index(i, j):
                    return by_layout(d, seq[i], j)

                for i in range(count):
                    for state, initial in ((h, h0), (c, c0)):
                        if state is None:
                            continue
                        with T.serial(0, hp) as j:
                            T.buffer_store(state, const(0.0), [i, j])
                        if initial is not None:
                            with T.serial(0, hidden) as j:
                                T.buffer_store(state, initial[state_index(i, j)], [i, j])

                length = [lengths[b] if lengths is not None else tirx.const(steps, "int32") for b in seq]

                def activation(slot, value, clip=True):
                    """Activation `slot` of the cell (f, g or h) on a vector; per direction when they differ.
                    clip: `clip` bounds the gates' inputs, not the cell state's output activation."""
                    if clip and spec.clip is not None:
                        value = tirx.max(tirx.min(value, const(spec.clip)), const(-spec.clip))
                    functions = {acts[slot] for acts in spec.activations}
                    if len(functions) == 1:
                        return _activation(tirx, *functions.pop(), value)
                    forward, backward = (_activation(tirx, *acts[slot], value) for acts in spec.activations)
                    return tirx.Select(d == 0, forward, backward)

                def for_lanes(body, start):
                    """body(i, jb, v, j) on every lane of the current block of every sequence."""
                    for i in range(count):
                        with T.unroll(0, block) as jb:
                            with T.vectorized(0, LANES) as v:
                                body(i, jb, v, start + jb * LANES + v)

                def accumulate(parts, start):
                    """acc[i, row] += value_of(i, k) * weights[d, k, gate, j] over k < size, for each part
                    (rows_of, size, value_of, weights) and (gate, row) in its rows_of; in passes over the rows
                    that keep at most ACCUMULATORS vectors in registers, so no accumulator spills."""
                    rows_used = sorted({row for rows_of, *_ in parts for _, row in rows_of})
                    per_pass = max(1, ACCUMULATORS // (count * block))
                    for first_row in range(0, len(rows_used), per_pass):
                        chosen = set(rows_used[first_row:first_row + per_pass])
                        for rows_of, size, value_of, weights in parts:
                            pass_rows = [(gate, row) for gate, row in rows_of if row in chosen]
                            if not pass_rows:
                                continue
                            with T.serial(0, size) as k:
                                scalars = [value_of(i, k) for i in range(count)]
                                for gate, row in pass_rows:
                                    with T.unroll(0, block) as jb:
                                        with T.vectorized(0, LANES) as v:
                                            weight = weights[d, k, gate, start + jb * LANES + v]
                                            for i in range(count):
                                                T.buffer_store(acc, acc[i, row, jb, v] + scalars[i] * weight, [i, row, jb, v])

                with T.serial(0, steps) as s:
                    if dirs == 2:
                        t = tirx.Select(d == 1, steps - 1 - s, s)
                    else:
                        t = steps - 1 - s if spec.reverse else s

                    with T.serial(0, blocks) as blk:
                        start = blk * (block * LANES)

                        def init(i, jb, v, j):  # acc = bias (+ Rbh in its own row)
                            for gate in range(gates):
                                T.buffer_store(acc, bias[d, gate, j], [i, gate, jb, v])
                            if rows > gates:
                                T.buffer_store(acc, r_bias_h[d, 0, j], [i, gates, jb, v])

                        for_lanes(init, start)
                        if gru and spec.linear_before_reset:
                            recurrent_rows = [(0, 0), (1, 1), (2, gates)]
                        elif gru:
                            recurrent_rows = [(0, 0), (1, 1)]  # the candidate waits for the reset gate
                        else:
                            recurrent_rows = [(g, g) for g in range(gates)]
                        accumulate([([(g, g) for g in range(gates)], spec.features, lambda i, k: x[by_layout(t, seq[i], k)], w),
                                    (recurrent_rows, hidden, lambda i, k: h[i, k], r)], start)

                        def cell(i, jb, v, j):
                            a = [acc[i, row, jb, v] for row in range(rows)]
                            if spec.op == "RNN":
                                T.buffer_store(h_new, activation(0, a[0]), [i, j])
                            elif gru:
                                z = activation(0, a[0])
                                reset = activation(0, a[1])
                                if spec.linear_before_reset:
                                    candidate = activation(1, a[2] + reset * a[3])
                                    T.buffer_store(h_new, (const(1.0) - z) * candidate + z * h[i, j], [i, j])
                                else:  # the candidate's input part waits in h_new
                                    T.buffer_store(z_gate, z, [i, j])
                                    T.buffer_store(reset_h, reset * h[i, j], [i, j])
                                    T.buffer_store(h_new, a[2], [i, j])
                            else:  # LSTM: gates i, o, f, c
                                def peephole(k, cell_state):
                                    return peep[d, k, j] * cell_state if peep is not None else const(0.0)

                                c_prev = c[i, j]
                                input_gate = activation(0, a[0] + peephole(0, c_prev))
                                forget = (const(1.0) - input_gate) if spec.input_forget else activation(0, a[2] + peephole(2, c_prev))
                                T.buffer_store(c_new, forget * c_prev + input_gate * activation(1, a[3]), [i, j])
                                output_gate = activation(0, a[1] + peephole(1, c_new[i, j]))
                                T.buffer_store(h_new, output_gate * activation(2, c_new[i, j], clip=False), [i, j])

                        for_lanes(cell, start)

                    if gru_reset_first:  # h~ = g(x_h + (r * H) @ Rh^T): every reset gate is known now
                        with T.serial(0, blocks) as blk:
                            start = blk * (block * LANES)

                            def init_candidate(i, jb, v, j):
                                T.buffer_store(acc, h_new[i, j], [i, 2, jb, v])

                            for_lanes(init_candidate, start)
                            accumulate([([(2, 2)], hidden, lambda i, k: reset_h[i, k], r)], start)

                            def candidate(i, jb, v, j):
                                z = z_gate[i, j]
                                T.buffer_store(h_new, (const(1.0) - z) * activation(1, acc[i, 2, jb, v]) + z * h[i, j], [i, j])

                            for_lanes(candidate, start)

                    # past a sequence's end its states hold and Y is zero
                    for i in range(count):
                        inside = t < length[i]
                        with T.vectorized(0, hp) as j:
                            T.buffer_store(h, tirx.Select(inside, h_new[i, j], h[i, j]), [i, j])
                            if lstm:
                                T.buffer_store(c, tirx.Select(inside, c_new[i, j], c[i, j]), [i, j])
                        with (T.vectorized if hidden % LANES == 0 else T.serial)(0, hidden) as j:
                            T.buffer_store(y, tirx.Select(inside, h_new[i, j], const(0.0)), _y_index(spec, t, d, seq[i], j))

                # an empty sequence ends in zero states, not the initial ones (as ONNX Runtime does)
                for i in range(count):
                    for final, state in ((y_h, h), (y_c, c)):
                        if final is None:
                            continue
                        with T.serial(0, hidden) as j:
                            T.buffer_store(final, tirx.Select(length[i] > 0, state[i, j], const(0.0)), state_index(i, j))

            # Sequences side by side share each weight load (the weights outgrow L1, so loads are
            # the limit): four from batch 4 up, two below; all cores only from PARALLEL_WORK up.
            work = steps * gates * hp * (spec.features + hidden) * dirs  # multiply-adds per sequence

            def groups_of(count):
                groups = dirs * ((batch + count - 1) // count)
                with T.If(batch * work >= PARALLEL_WORK):
                    with T.Then():
                        with T.parallel(0, groups) as index:
                            sequences(index, count)
                    with T.Else():
                        with T.serial(0, groups) as index:
                            sequences(index, count)

            with T.If(batch == 1):
                with T.Then():
                    with T.serial(0, dirs) as index:
                        sequences(index, 1)
                with T.Else():
                    with T.If(batch < WIDE_GROUP):
                        with T.Then():
                            groups_of(2)
                        with T.Else():
                            groups_of(WIDE_GROUP)
    return builder.get()


def _y_index(spec: KernelSpec, t, d, b, j):
    return (b, t, d, j) if spec.layout else (t, d, b, j)


def _activation(tirx, kind: str, alpha, beta, x):
    """The ONNX RNN activation `kind` (lower case) on a float32 TIR value, as ONNX Runtime defines it."""
    def const(value):
        return tirx.const(value, "float32")

    zero, one = const(0.0), const(1.0)
    if kind == "sigmoid":
        return tirx.sigmoid(x)
    if kind == "tanh":
        return tirx.tanh(x)
    if kind == "relu":
        return tirx.max(x, zero)
    if kind == "softsign":
        return x / (one + tirx.abs(x))
    if kind == "softplus":
        return tirx.log(tirx.exp(x) + one)
    if kind == "leakyrelu":
        return tirx.Select(x < zero, const(alpha) * x, x)
    if kind == "thresholdedrelu":
        return tirx.Select(x > const(alpha), x, zero)
    if kind == "elu":
        return tirx.Select(x < zero, const(alpha) * (tirx.exp(x) - one), x)
    if kind == "hardsigmoid":
        return tirx.max(zero, tirx.min(one, const(alpha) * x + const(beta)))
    if kind == "affine":
        return const(alpha) * x + const(beta)
    if kind == "scaledtanh":
        return const(alpha) * tirx.tanh(const(beta) * x)
    raise ValueError(f"unknown activation {kind}")  # rnn.py validated the names before


def _convert(bb, inputs, attr, _params):
    """The RecurrentSequence node as a call_tir of its kernel; outputs (Y, Y_h, Y_c)."""
    from tvm import relax

    spec = KernelSpec.from_json(attr["spec"].decode() if isinstance(attr["spec"], bytes) else attr["spec"])
    x = inputs[0]
    args = [a for a in inputs if a is not None]
    x_shape = list(x.ty.shape.values)
    batch = x_shape[0] if spec.layout else x_shape[1]
    state = [batch, spec.directions, spec.hidden] if spec.layout else [spec.directions, batch, spec.hidden]
    sequence = [batch, spec.steps, spec.directions, spec.hidden] if spec.layout else [spec.steps, spec.directions, batch, spec.hidden]
    shapes = [sequence, state] + ([state] if spec.op == "LSTM" else [])
    kernel = bb.add_func(build_kernel(spec), f"recurrent_{spec.op.lower()}")
    call = bb.emit(relax.call_tir(kernel, args, [relax.TensorType(s, "float32") for s in shapes]))
    outputs = [bb.emit(relax.TupleGetItem(call, i)) for i in range(len(shapes))]
    if spec.op != "LSTM":  # no cell state: the node's third output is never read
        outputs.append(outputs[1])
    return relax.Tuple(outputs)


@contextlib.contextmanager
def converters():
    """TVM's ONNX importer, for the duration, converting RecurrentSequence nodes as well."""
    from tvm.relax.frontend.onnx import onnx_frontend

    class RecurrentSequence(onnx_frontend.OnnxOpConverter):
        @classmethod
        def _impl_v1(cls, bb, inputs, attr, params):
            return _convert(bb, inputs, attr, params)

    original = onnx_frontend._get_convert_map

    def extended():
        return {**original(), OP_TYPE: RecurrentSequence}

    onnx_frontend._get_convert_map = extended
    try:
        yield
    finally:
        onnx_frontend._get_convert_map = original
