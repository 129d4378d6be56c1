"""3x3 convolutions as Winograd F(m x m, 3 x 3) on CPUs: fewer multiply-adds, in three kernels.

Each m x m block of a 3x3, stride-1 convolution's output is computed from the (m + 2)^2 window of input
above it with (m + 2)^2 multiplies per pair of channels instead of 9 m^2 (Lavin and Gray, "Fast
Algorithms for Convolutional Neural Networks", 2016): F(4x4, 3x3) does 4x fewer multiply-adds than the
direct convolution, F(2x2, 3x3) 2.25x fewer. `legalize` rewrites such a relax.nn.conv2d, before TVM
legalizes the rest, into

    input   V[e, p, c] = (B^T d_p B)[e]       every tile p's window d_p, per channel (the padded copy first,
                                              in NHWC, so a vector holds 8 channels)
    gemm    M[e, p, f] = sum_c V[e, p, c] U[e, c, f]   (m + 2)^2 matmuls; U = G g G^T, the weights transformed
                                              at compile time. The matmul rule schedules them.
    output  O[n, f, y, x] = (A^T M_p A)[y mod m, x mod m]   then the bias, activation and residual add,
                                              which FuseOps fuses after it as after a convolution

A, B and G are TVM's Cook-Toom matrices (topi.nn.winograd_util). The transforms are written out with
their zero coefficients dropped, one 1-D pass over rows then one over columns, and each rule below
keeps a tile's transform in registers. In fp32 the outputs stay within 2e-5 of the direct convolution's
relative to the output's range on ResNet-18's layers (F(4x4) included), well inside the compile's
verification tolerance.

The direct convolution (toolkit.schedules.conv2d) stays where a GEMM would be shorter than
MIN_TILES rows: it would read the transformed weights, (m + 2)^2 / 9 times the originals, for too few
rows; where the convolution is too small to pay for two more kernel calls (MIN_MULTIPLY_ADDS); and
where the tiles, cut short by a small map, would save too little (MAX_WORK_RATIO). Where 4x4 tiles
are too few or too wasteful (a 4x4 map at batch 1, a 2x2 map), 2x2 tiles may not be. Shapes must be static.
A map the tile does not divide (7x7, SqueezeNet's 55x55) gets a last row and column of tiles that
reach into the zero padding; the output transform writes only the map.
"""

from __future__ import annotations

import numpy as np

from toolkit.schedules import cpu
from toolkit.schedules.matmul import _inline_epilogue

# Tiles per batch below which the GEMMs are too short (see above). Measured on a Zen 3, 2 cores, against
# the 48 first chosen: VGG p50 0.77x / 0.64x ONNX Runtime's at batch 1 / 8 instead of 1.02 / 0.95 (its 8x8
# and 4x4 maps, 4-16 tiles, now Winograd), ResNet-18 the same within noise (0.76-0.78 / 0.74-0.75); a
# single tile (F(4x4) on a 4x4 map at batch 1) lost to F(2x2)'s four, 38 us against 31.
MIN_TILES = 4
# The direct convolution's multiply-adds below which its one kernel beats Winograd's three: each call
# costs 1-2 us on its own. LeNet's 16 -> 32 channels on 4x4 maps (74K) lost 4-5 us at batch 1 (0.65x
# ONNX Runtime's p50 against 0.50) and gained at batch 8 (590K); ResNet-digits' 147K convolutions lost.
MIN_MULTIPLY_ADDS = 1 << 18
# Winograd's multiply-adds at most this share of the direct convolution's, the transforms' cost
# beside them. F(4x4) on a 2x2 map (ResNet-digits' last stage) computes a 4x4 block for it, as many
# multiply-adds as the direct convolution: its GEMMs took 26 us of a 145 us inference at batch 8.
MAX_WORK_RATIO = 0.5
TILE_SIZES = (4, 2)  # m of F(m x m, 3 x 3), the larger first
LANES = 8  # channels per vector in the transforms' layout: both channel counts must be multiples
KERNEL_PREFIX = "winograd_"  # the rewrite's TIR functions; FuseOps keeps it inside a fused kernel's name


def legalize():
    """The relax pass that rewrites each eligible conv2d (see the module's docstring) into the three kernels."""
    import tvm
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    conv2d = tvm.ir.Op.get("relax.nn.conv2d")

    @mutator
    class Rewriter(PyExprMutator):
        def visit_call_(self, call):
            call = super().visit_call_(call)
            if call.op != conv2d:
                return call
            plan = _plan(call)
            if plan is None:
                return call
            tile, weight = plan
            kernel = _transformed_weight(weight, tile)
            data = call.args[0]
            transformed = self.builder_.emit_te(lambda d: _input_te(d, tile), data, primfunc_name_hint="winograd_input")
            products = self.builder_.emit_te(_gemm_te, transformed, relax.const(kernel), primfunc_name_hint="winograd_gemm")
            shape = [int(d) for d in data.ty.shape]
            # the call itself, not a variable bound to it: an alias binding in between would stop FuseOps
            # from fusing the bias and activation after it
            return self.builder_.call_te(lambda m: _output_te(m, shape, weight.shape[0], tile), products,
                                         primfunc_name_hint="winograd_output")

    @tvm.transform.module_pass(opt_level=0, name="dltk.WinogradConv2d")
    def rewrite(mod, _ctx):
        rewriter = Rewriter(mod)
        for gvar, func in mod.functions_items():
            if isinstance(func, relax.Function):
                rewriter.builder_.update_func(gvar, rewriter.visit_expr(func))
        return _with_op_patterns(rewriter.builder_.get())

    return rewrite


def _plan(call):
    """(tile size m, the weight as numpy) where the conv2d is eligible, else None."""
    import tvm

    attrs = call.attrs
    data, weight = call.args
    if not isinstance(weight, tvm.ir.expr.Constant):
        return None
    if (list(attrs.strides) != [1, 1] or list(attrs.dilation) != [1, 1] or int(attrs.groups) != 1
            or list(attrs.padding) != [1, 1, 1, 1] or attrs.data_layout != "NCHW" or attrs.kernel_layout != "OIHW"
            or attrs.out_layout != "NCHW" or str(attrs.out_dtype) not in ("", "None", "float32")):
        return None
    shape = getattr(data.ty, "shape", None)
    if shape is None or str(data.ty.dtype) != "float32" or not all(isinstance(d, tvm.tirx.IntImm) for d in shape):
        return None  # a symbolic dim: the static variants of the batch get the rewrite
    batch, channels, height, width = (int(d) for d in shape)
    kernel = weight.value.numpy()
    if kernel.dtype != np.float32 or kernel.shape[1:] != (channels, 3, 3):
        return None
    if channels % LANES or kernel.shape[0] % LANES:
        return None
    tile = tile_size(batch, channels, kernel.shape[0], height, width)
    return (tile, kernel) if tile else None


def tile_size(batch: int, channels: int, filters: int, height: int, width: int) -> int | None:
    """m of F(m x m, 3 x 3) for this convolution, None where the direct convolution stays: of the
    tiles with at least MIN_TILES per batch, the one with the fewest multiply-adds (tiles cut short
    by the map count whole), if that is at most MAX_WORK_RATIO of the direct convolution's."""
    direct = batch * height * width * 9  # multiply-adds per (input, output) channel pair
    if direct * channels * filters < MIN_MULTIPLY_ADDS:
        return None
    work = {tile: batch * _tiles(height, tile) * _tiles(width, tile) * (tile + 2) ** 2 for tile in TILE_SIZES
            if batch * _tiles(height, tile) * _tiles(width, tile) >= MIN_TILES}
    best = min(work, key=work.get, default=None)  # ties go to the first in TILE_SIZES
    return best if best is not None and work[best] <= MAX_WORK_RATIO * direct else None


def _tiles(size: int, tile: int) -> int:
    return -(-size // tile)  # the last tile of an odd map reaches into the zero padding


def _matrices(tile: int):
    """A (alpha x m), B (alpha x alpha), G (alpha x 3) of F(m x m, 3 x 3), alpha = m + 2."""
    from tvm.topi.nn.winograd_util import _cook_toom_convolution, _interpolation_points

    a, b, g = _cook_toom_convolution(_interpolation_points(tile + 1), tile, 3)
    return np.asarray(a, np.float64), np.asarray(b, np.float64), np.asarray(g, np.float64)


def _transformed_weight(weight: np.ndarray, tile: int) -> np.ndarray:
    """U[e1 * alpha + e2, c, f] = (G g_fc G^T)[e1, e2], computed once at compile time, in float64."""
    _, _, g = _matrices(tile)
    alpha = tile + 2
    u = np.einsum("ai,fcij,bj->abcf", g, weight.astype(np.float64), g)
    return u.reshape(alpha * alpha, weight.shape[1], weight.shape[0]).astype(np.float32)


def _combine(coefficients, term):
    """sum_i coefficients[i] * term(i), zeros dropped, +-1 as additions (the transforms are sparse)."""
    from tvm import tirx

    total = None
    for i, c in enumerate(coefficients):
        if c == 0:
            continue
        value = term(i) if c == 1 else -term(i) if c == -1 else term(i) * tirx.const(float(c), "float32")
        total = value if total is None else total + value
    return total if total is not None else tirx.const(0.0, "float32")


def _select(index, cases):
    """cases[index] for a loop index that unrolling makes constant (tirx.Select then folds to one case)."""
    from tvm import tirx

    expr = cases[-1]
    for i in range(len(cases) - 2, -1, -1):
        expr = tirx.Select(index == i, cases[i], expr)
    return expr


def _input_te(data, tile: int):
    from tvm import te, tirx

    batch, channels, height, width = (int(d) for d in data.shape)
    _, b, _ = _matrices(tile)
    alpha = tile + 2
    tiles_y, tiles_x = _tiles(height, tile), _tiles(width, tile)
    tiles = batch * tiles_y * tiles_x
    zero = tirx.const(0.0, "float32")
    # NCHW -> padded NHWC: a vector of the transforms below holds 8 channels of one pixel
    padded = te.compute((batch, tiles_y * tile + 2, tiles_x * tile + 2, channels), lambda n, y, x, c: tirx.if_then_else(
        tirx.all(y >= 1, y <= height, x >= 1, x <= width), data[n, c, y - 1, x - 1], zero), name="winograd_pad")

    def window(p, r1, r2, c):  # row r1, column r2 of tile p's window
        n, t = p // (tiles_y * tiles_x), p % (tiles_y * tiles_x)
        return padded[n, t // tiles_x * tile + r1, t % tiles_x * tile + r2, c]

    rows = te.compute((alpha, alpha, tiles, channels), lambda e1, r2, p, c: _select(
        e1, [_combine(b[:, e], lambda r1: window(p, r1, r2, c)) for e in range(alpha)]), name="winograd_rows")
    return te.compute((alpha * alpha, tiles, channels), lambda e, p, c: _select(
        e, [_combine(b[:, e % alpha], lambda r2, e1=e // alpha: rows[e1, r2, p, c]) for e in range(alpha * alpha)]),
        name="winograd_input")


def _gemm_te(transformed, kernel):
    from tvm import te

    channels = transformed.shape[2]
    c = te.reduce_axis((0, channels), "c")
    return te.compute((kernel.shape[0], transformed.shape[1], kernel.shape[2]),
                      lambda e, p, f: te.sum(transformed[e, p, c] * kernel[e, c, f], axis=c), name="winograd_gemm")


def _output_te(products, shape, filters: int, tile: int):
    from tvm import te

    batch, _, height, width = shape
    a, _, _ = _matrices(tile)
    alpha = tile + 2
    tiles_y, tiles_x = _tiles(height, tile), _tiles(width, tile)
    tiles = batch * tiles_y * tiles_x
    columns = te.compute((alpha, tile, tiles, filters), lambda s1, v, p, f: _select(
        v, [_combine(a[:, j], lambda s2: products[s1 * alpha + s2, p, f]) for j in range(tile)]), name="winograd_columns")
    blocks = te.compute((tiles, tile, tile, filters), lambda p, u, v, f: _select(
        u, [_combine(a[:, i], lambda s1: columns[s1, v, p, f]) for i in range(tile)]), name="winograd_output")
    return te.compute((batch, filters, height, width), lambda n, f, y, x: blocks[
        n * tiles_y * tiles_x + y // tile * tiles_x + x // tile, y % tile, x % tile, f], name="winograd_layout")


# relax's op patterns (tvm/relax/op_attr_types.h): the output kernel fuses the elementwise ops after it,
# as a convolution does (the GEMM is marked the same, as a matmul is: nothing elementwise follows it); the
# input kernel fuses nothing (a producer's epilogue is fused into its own kernel).
_OUT_ELEMWISE_FUSABLE, _OPAQUE = 4, 8


def _with_op_patterns(mod):
    import tvm

    for gvar, func in list(mod.functions_items()):
        if isinstance(func, tvm.tirx.PrimFunc) and gvar.name_hint.startswith(KERNEL_PREFIX):
            pattern = _OPAQUE if gvar.name_hint.startswith("winograd_input") else _OUT_ELEMWISE_FUSABLE
            mod[gvar] = func.with_attr("op_pattern", pattern)
    return mod


def is_winograd_kernel(name: str) -> bool:
    """Whether a kernel (a TIR function, or a tuning task, by name) is one of the rewrite's, fused or not."""
    return KERNEL_PREFIX in name


def _block(sch, name: str):
    for block in sch.get_child_blocks(sch.get_sblock("root")):
        if sch.get(block).name_hint == name:
            return block
    return None


class WinogradInput(cpu.Rule):
    """The input transform: tiles in parallel, each tile's (m + 2)^2 x 8-channel transform in registers."""

    name = "winograd-input"

    def _schedule(self, sch, func, target) -> bool:
        pad, rows, out = (_block(sch, n) for n in ("winograd_pad", "winograd_rows", "winograd_input"))
        if pad is None or rows is None or out is None:
            return False
        e, p, c = sch.get_loops(out)
        co, ci = sch.split(c, [None, LANES])
        sch.reorder(p, co, e, ci)
        tile = sch.fuse(p, co)
        sch.parallel(tile)
        sch.unroll(e)
        sch.vectorize(ci)
        sch.compute_at(rows, tile)
        e1, r2, rc = sch.get_loops(rows)[-3:]
        sch.unroll(e1)
        sch.unroll(r2)
        sch.vectorize(rc)
        n, y, x, pc = sch.get_loops(pad)
        pco, pci = sch.split(pc, [None, LANES])
        sch.reorder(n, y, pco, x, pci)
        sch.parallel(sch.fuse(n, y))
        sch.vectorize(pci)
        return True


class WinogradOutput(cpu.Rule):
    """The output transform with the epilogue after it: per tile and 8 channels, the m x m block in
    registers, written to NCHW through the bias, activation and residual add."""

    name = "winograd-output"

    def _schedule(self, sch, func, target) -> bool:
        columns, blocks, layout = (_block(sch, n) for n in ("winograd_columns", "winograd_output", "winograd_layout"))
        if columns is None or blocks is None or layout is None:
            return False
        tile = int(sch.get(blocks).iter_vars[1].dom.extent)
        width = int(sch.get(layout).iter_vars[3].dom.extent)
        _inline_epilogue(sch, layout)
        written = sch.get_consumers(blocks)
        if len(written) != 1:
            return False
        layout = written[0]
        n, f, y, x = sch.get_loops(layout)
        fo, fi = sch.split(f, [None, LANES])
        ty, u = sch.split(y, [None, tile])
        tx, v = sch.split(x, [None, tile])
        sch.reorder(n, ty, tx, fo, fi, u, v)
        sch.parallel(sch.fuse(n, ty))
        sch.unroll(fi)
        sch.unroll(u)
        if width % tile:  # the row's last tile is cut short: no whole vector
            sch.unroll(v)
        else:
            sch.vectorize(v)
        sch.compute_at(blocks, fo)
        sch.compute_at(columns, fo)
        for block in (blocks, columns):
            first, second, lanes = sch.get_loops(block)[-3:]
            sch.unroll(first)
            sch.unroll(second)
            sch.vectorize(lanes)
        return True
