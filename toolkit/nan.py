"""Compiled code keeps NaN meaning NaN: a TIR rewrite of float max and min before lowering.

TVM lowers `max(a, b)` to `a > b ? a : b`, which answers b when a is NaN: ReLU, legalized as
`max(x, 0)`, turned a NaN input into 0 and a model into one that gives finite, confident logits
for NaN or infinite inputs, where ONNX Runtime and PyTorch give NaN. The rewrite makes every float
max and min propagate NaN from either side (IEEE 754-2019 maximum/minimum, numpy's np.maximum),
in element-wise ops (ReLU, Clip) and reductions alike (ReduceMax, max-pooling, softmax's max).
ONNX Runtime's MaxPool drops a NaN when its window holds a number; PyTorch and dltk's compiled
code do not. It runs after the tuning records are applied, so it does not change which records match.
"""

from __future__ import annotations


def propagate_nan(module):
    """The IRModule with every float Max/Min in its TIR functions made NaN-propagating."""
    import tvm
    import tvm_ffi
    from tvm import tirx

    def rewrite(expr):
        if not str(expr.ty).startswith(("float", "bfloat")):
            return expr  # integer max/min (indices, shapes) know no NaN
        a, b = expr.a, expr.b
        first_wins = (a > b) if isinstance(expr, tirx.Max) else (a < b)
        return tirx.Select(tirx.Or(first_wins, tirx.isnan(a)), a, b)  # and b when b is NaN: a > NaN is false

    functions = {
        gv: tvm_ffi.structural_map(f, [((tirx.Max, tirx.Min), rewrite)]) if isinstance(f, tirx.PrimFunc) else f
        for gv, f in module.functions.items()
    }
    return tvm.IRModule(functions, attrs=module.attrs, global_infos=module.global_infos)
