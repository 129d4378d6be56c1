"""Vectorizable float32 exp, tanh, sigmoid and erf on CPUs: a TIR rewrite before lowering.

LLVM has no vector exp or erf of its own: a vectorized `llvm.exp.v8f32` becomes eight calls to
libm's scalar `expf`, and `erf` is always a scalar `erff` call; TVM lowers tanh and sigmoid
through exp (tanh through two). In GPT's GELU, attention's softmax, SiLU and the recurrent
cells' gates those calls cost more than the matmuls around them. The rewrite replaces each
float32 call by a polynomial that is plain arithmetic and vectorizes to the target's width:
Cephes' exp (as TVM's `topi.fast_exp`), Eigen's rational tanh and erf (as `topi.fast_tanh` and
`topi.fast_erf`; ONNX Runtime's MLAS kernels use the same approximations). Their error is a few
units in the last place, well inside the compile's verification tolerance. Unlike
`topi.fast_tanh` in TVM 0.27, tanh clamps its input, so large inputs give +-1, not NaN.

It runs after the tuning records are applied (it changes the kernels' TIR, so records would no
longer match) and after `toolkit.nan`'s rewrite (which copies the operands of max and min, and a
copied `Let` would define its variable twice); a NaN input gives NaN, as the libm functions do.
"""

from __future__ import annotations

# Cephes expf: exp(x) = 2^n * exp(f), |f| <= ln2/2, exp(f) by a degree-7 polynomial.
EXP_LOW, EXP_HIGH = -104.0, 88.75  # float32 exp is 0 below, inf above
EXP_POLY = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1)
# Eigen's tanh: odd degree-13 numerator over even degree-6 denominator, on [-9, 9] (+-1 beyond, in float32).
TANH_RANGE = 9.0
TANH_NUM = (-2.76076847742355e-16, 2.00018790482477e-13, -8.60467152213735e-11, 5.12229709037114e-08,
            1.48572235717979e-05, 6.37261928875436e-04, 4.89352455891786e-03)
TANH_DEN = (1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03, 4.89352518554385e-03)
# Eigen's erf: the same form, on [-4, 4].
ERF_RANGE = 4.0
ERF_NUM = (-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06, -5.69250639462346e-05,
           -7.34990630326855e-04, -2.95459980854025e-03, -1.60960333262415e-02)
ERF_DEN = (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03, -7.37332916720468e-03,
           -1.42647390514189e-02)

REWRITTEN = ("tirx.exp", "tirx.tanh", "tirx.sigmoid", "tirx.erf")


def fast_math(module):
    """The IRModule with every float32 exp, tanh, sigmoid and erf in its TIR functions approximated."""
    import tvm
    import tvm_ffi
    from tvm import tirx

    approximations = {tvm.ir.Op.get("tirx.exp"): _exp, tvm.ir.Op.get("tirx.tanh"): _tanh,
                      tvm.ir.Op.get("tirx.sigmoid"): _sigmoid, tvm.ir.Op.get("tirx.erf"): _erf}

    def rewrite(call):
        approximate = next((f for op, f in approximations.items() if call.op.same_as(op)), None)
        if approximate is None or str(call.ty) != "float32":
            return call
        # NaN in, NaN out, as libm: the clamps would turn it into a number
        return _let(call.args[0], lambda x: tirx.Select(tirx.isnan(x), x, approximate(x)))

    functions = {
        gv: tvm_ffi.structural_map(f, [(tvm.ir.Call, rewrite)]) if isinstance(f, tirx.PrimFunc) else f
        for gv, f in module.functions.items()
    }
    return tvm.IRModule(functions, attrs=module.attrs, global_infos=module.global_infos)


def _exp(x):
    from tvm import tirx

    def from_clamped(x):
        n = tirx.floor(x * _f(1.4426950408889634) + _f(0.5))  # x = n ln2 + f
        return _let(n, lambda n: _let(x - n * _f(0.6931471805599453), lambda f: _let(tirx.floor(n * _f(0.5)), lambda half: (
            # 2^n as two powers of two built in the exponent bits, so that results near the ends of
            # float32's range (denormals, the overflow to inf) come out as libm's
            _power_of_two(half) * (_power_of_two(n - half) * (_horner(f, EXP_POLY) * f * f + f + _f(1.0)))
        ))))

    return _let(tirx.max(tirx.min(x, _f(EXP_HIGH)), _f(EXP_LOW)), from_clamped)


def _power_of_two(n):
    from tvm import tirx

    return tirx.reinterpret("float32", tirx.Cast("int32", n + _f(127.0)) << 23)


def _sigmoid(x):
    return _f(1.0) / (_f(1.0) + _exp(-x))


def _tanh(x):
    return _rational(_clamp(x, TANH_RANGE), TANH_NUM, TANH_DEN)


def _erf(x):
    return _rational(_clamp(x, ERF_RANGE), ERF_NUM, ERF_DEN)


def _rational(x, numerator, denominator):
    """x * P(x^2) / Q(x^2), coefficients highest power first."""
    return _let(x, lambda x: _let(x * x, lambda x2: x * _horner(x2, numerator) / _horner(x2, denominator)))


def _horner(x, coefficients):
    value = _f(coefficients[0])
    for c in coefficients[1:]:
        value = value * x + _f(c)
    return value


def _clamp(x, bound: float):
    from tvm import tirx

    return tirx.max(tirx.min(x, _f(bound)), _f(-bound))


def _let(value, body):
    """body(v) with v bound to `value` once: the polynomials read their argument many times."""
    from tvm import tirx

    var = tirx.Var("v", "float32")
    return tirx.Let(var, value, body(var))


def _f(value: float):
    from tvm import tirx

    return tirx.const(value, "float32")
