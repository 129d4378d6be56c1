"""2-D convolutions in NCHW on CPUs: output channels in vector registers, packed weights.

Matches the one multiply-add reduction block of a fused kernel that reads
O[n, f, y, x] += P[n, c, y*s + ry*d, x*s + rx*d] * W[f, c, ry, rx] (plain, strided, dilated,
1x1 and grouped, where the input channel is g * C/groups + c). The schedule follows the x86
NCHWc schedules TVM had until 0.19, without changing the activations' layout:

    for n, F/nr, y, X/xt (parallel when the kernel is large enough):
        acc[nr, xt] = 0                         # xt x nr/lanes vector registers
        for c, ry, rx: acc[:, xx] += W[f:f+nr, c, ry, rx] * P[n, c, y+ry, x+xx+rx]  (xx unrolled)
        O[n, f:f+nr, y, x:x+xt] = epilogue(acc)  # bias, activation, residual add: fused

The weight is re-laid out as [F/nr, C, KH, KW, nr] at compile time, so each step loads nr
contiguous output channels. Depthwise convolutions (one input channel per group) vectorize
along the output row instead.
"""

from __future__ import annotations

from toolkit.schedules import cpu
from toolkit.schedules.matmul import (
    _dtype_bits,
    _inline_epilogue,
    _is_multiply_add,
    _layout_free_read,
    _single_reduction_block,
)


class Conv2d(cpu.Rule):
    name = "conv2d"

    def _schedule(self, sch, func, target) -> bool:
        main = _single_reduction_block(sch)
        if main is None or not _is_multiply_add(sch.get(main)):
            return False
        block = sch.get(main)
        axes = _conv_axes(block)
        if axes is None:
            return False
        loops = sch.get_loops(main)
        if len(loops) != len(block.iter_vars):
            return False
        loop_of = {iv.var: loop for iv, loop in zip(block.iter_vars, loops)}
        extent_of = {iv.var: iv.dom.extent for iv in block.iter_vars}
        n, f, y, x, c, ry, rx = (loop_of[v] for v in axes)
        f_extent = cpu.static_extent(extent_of[axes[1]], unknown=0)
        x_extent = cpu.static_extent(extent_of[axes[3]], unknown=0)
        if not f_extent or not x_extent:
            return False
        lanes = cpu.vector_lanes(target, _dtype_bits(block))
        depthwise = cpu.static_extent(extent_of[axes[4]], unknown=0) == 1 and _reads_channel_of_output(block, axes)
        work = 1
        for v in axes[1:]:
            work *= cpu.static_extent(extent_of[v])

        if depthwise:
            nr, xt = 1, _vector_tile(x_extent, lanes)
        else:
            nr, xt = _register_tile(target, lanes, f_extent, x_extent)
        fo, fi = sch.split(f, [None, nr])
        xo, xi = sch.split(x, [None, xt])
        sch.reorder(n, fo, y, xo, c, ry, rx, xi, fi)
        if not depthwise:
            _pack_weight(sch, func, main, axes, nr, f_extent)

        if cpu.cores(target) > 1 and work >= cpu.PARALLEL_MIN_WORK:
            sch.parallel(sch.fuse(fo, y))
        acc = sch.cache_write(main, 0, cpu.ACCUMULATOR_SCOPE)
        if not depthwise:  # the accumulator tile as [x][f]: each register holds nr contiguous channels
            sch.transform_layout(main, ("write", 0), lambda n, f, y, x: (n, y, x, f))
        _inline_epilogue(sch, acc)
        sch.reverse_compute_at(acc, xo)
        if depthwise:
            sch.vectorize(xi)
        else:
            sch.unroll(xi)
            sch.vectorize(fi)
        sch.unroll(rx)
        init = sch.decompose_reduction(main, c)
        *_, x_init, f_init = sch.get_loops(init)
        if depthwise:
            sch.vectorize(x_init)
        else:
            sch.unroll(x_init)
            sch.vectorize(f_init)
        _schedule_padding(sch, main, target)
        *_, row = sch.get_loops(acc)  # the write-back walks the tile in NCHW order: x is contiguous
        sch.vectorize(row)

        return True


def _schedule_padding(sch, main, target) -> None:
    """The padded copy of the input (the producer left in the kernel): rows in parallel."""
    for producer in sch.get_producers(main):
        if sch.get(producer).name_hint.startswith("pad"):
            loops = sch.get_loops(producer)
            if len(loops) > 1 and cpu.cores(target) > 1:
                sch.parallel(sch.fuse(*loops[:-1]))


def _conv_axes(block):
    """The block's iter vars as (n, f, y, x, c, ry, rx), or None when the block is no NCHW conv2d."""
    from tvm import tirx

    if len(block.reads) != 2 or len(block.writes) != 1 or len(block.iter_vars) != 7:
        return None
    out = [r.min for r in block.writes[0].region]
    weight = [r.min for r in block.reads[1].region]
    data = block.reads[0].region
    if len(out) != 4 or len(weight) != 4 or len(data) != 4:
        return None
    if not all(isinstance(v, tirx.Var) for v in out + weight):
        return None
    n, f, y, x = out
    wf, c, ry, rx = weight
    if not wf.same_as(f):
        return None
    kinds = {iv.var: iv.iter_type for iv in block.iter_vars}
    if any(kinds.get(v) != tirx.IterVar.DataPar for v in out):
        return None
    if any(kinds.get(v) != tirx.IterVar.CommReduce for v in (c, ry, rx)):
        return None
    used = [_vars_in(r.min) for r in data]
    if used[0] != {n} or used[2] != {y, ry} or used[3] != {x, rx} or c not in used[1]:
        return None
    return n, f, y, x, c, ry, rx


def _vars_in(expr) -> set:
    from tvm.tirx.analysis import undefined_vars

    return set(undefined_vars(expr))


def _reads_channel_of_output(block, axes) -> bool:
    """Depthwise: the input channel follows the output channel, one input channel per group."""
    return axes[1] in _vars_in(block.reads[0].region[1].min)


def _register_tile(target, lanes: int, f_extent: int, x_extent: int) -> tuple[int, int]:
    """(output channels, output columns) of the accumulator tile.

    Output channels: two vectors where they divide F, else one, else all of a small F.
    Columns: the largest divisor of the row width that leaves registers for the weights
    and a broadcast input; a row too narrow for that gets one vector of channels and more columns.
    """
    registers = cpu.vector_registers(target)
    for vectors in (2, 1):
        if f_extent % (vectors * lanes) == 0:
            nr = vectors * lanes
        elif vectors == 1:
            nr = f_extent if f_extent < lanes else lanes
        else:
            continue
        per_column = max(1, -(-nr // lanes))
        widest = max(1, (registers - per_column - 2) // per_column)
        xt = max(d for d in range(1, min(widest, x_extent) + 1) if x_extent % d == 0)
        if xt >= 4 or xt == x_extent or vectors == 1:
            return nr, xt
    raise AssertionError("unreachable")


def _vector_tile(x_extent: int, lanes: int) -> int:
    if x_extent % lanes == 0 or x_extent < lanes:
        return min(x_extent, lanes)
    return lanes


def _pack_weight(sch, func, main, axes, nr: int, f_extent: int) -> None:
    """Re-lay a layout-free OIHW weight as [O/nr, I, H, W, nr]; `tune.build` folds it into the constants."""
    block = sch.get(main)
    if f_extent % nr or _layout_free_read(func, block) != 1:
        return
    rewrite = sch.cache_read(main, 1, "global")
    sch.annotate(rewrite, "meta_schedule.layout_rewrite_preproc", True)
    sch.transform_layout(main, ("read", 1), lambda o, i, h, w: (o // nr, i, h, w, o % nr))
