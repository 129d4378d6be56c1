"""Window pooling (max-pool, average-pool) in NCHW on CPUs: output rows vectorized, rows in parallel.

Matches the one reduction block of a fused kernel that reads O[n, c, y, x] = max or sum over
(ry, rx) of P[n, c, y*s + ry*d, x*s + rx*d], without a multiplication (that is a convolution).
The schedule:

    for n, c, y (c x y parallel when the kernel is large enough), x in chunks of a vector:
        acc[:] = init                                     # one vector register
        for ry, rx: acc[:] = max(acc, P[n, c, y*s+ry, x*s+rx + 0..lanes))
        O[n, c, y, x:x+lanes] = epilogue(acc)             # average's divide, activations: fused

The padded copy of the input (max-pool's -inf border) stays a separate loop, copied in parallel.
Global average pooling is a row reduction (toolkit.schedules.reduction) instead.
"""

from __future__ import annotations

from toolkit.schedules import cpu
from toolkit.schedules.conv2d import _schedule_padding, _vars_in
from toolkit.schedules.matmul import _inline_epilogue, _single_reduction_block


class Pool2d(cpu.Rule):
    name = "pool2d"

    def _schedule(self, sch, func, target) -> bool:
        main = _single_reduction_block(sch)
        if main is None:
            return False
        block = sch.get(main)
        axes = _pool_axes(block)
        if axes is None:
            return False
        loops = sch.get_loops(main)
        if len(loops) != len(block.iter_vars):
            return False
        loop_of = {iv.var: loop for iv, loop in zip(block.iter_vars, loops)}
        extent_of = {iv.var: cpu.static_extent(iv.dom.extent, unknown=0) for iv in block.iter_vars}
        n, c, y, x, ry, rx = (loop_of[v] for v in axes)
        x_extent = extent_of[axes[3]]
        if not x_extent:
            return False
        lanes = cpu.vector_lanes(target)
        elements = 1
        for v in axes[1:]:
            elements *= extent_of[v] or 1

        xo, xi = sch.split(x, [None, _row_chunk(x_extent, lanes)])
        sch.reorder(n, c, y, xo, ry, rx, xi)
        if cpu.cores(target) > 1 and elements >= cpu.PARALLEL_MIN_ELEMENTS:
            sch.parallel(sch.fuse(c, y))
        acc = sch.cache_write(main, 0, cpu.ACCUMULATOR_SCOPE)
        _inline_epilogue(sch, acc)
        sch.reverse_compute_at(acc, xo)
        sch.vectorize(xi)
        init = sch.decompose_reduction(main, ry)
        sch.vectorize(sch.get_loops(init)[-1])
        _schedule_padding(sch, main, target)
        sch.vectorize(sch.get_loops(acc)[-1])
        return True


def _pool_axes(block):
    """The block's iter vars as (n, c, y, x, ry, rx), or None when the block is no NCHW window pooling."""
    from tvm import tirx

    if len(block.reads) != 1 or len(block.writes) != 1 or len(block.iter_vars) != 6:
        return None
    if not isinstance(getattr(block.body, "value", None), (tirx.Max, tirx.Add)):
        return None
    out = [r.min for r in block.writes[0].region]
    data = block.reads[0].region
    if len(out) != 4 or len(data) != 4 or not all(isinstance(v, tirx.Var) for v in out):
        return None
    kinds = {iv.var: iv.iter_type for iv in block.iter_vars}
    if any(kinds.get(v) != tirx.IterVar.DataPar for v in out):
        return None
    reduce = [iv.var for iv in block.iter_vars if iv.iter_type == tirx.IterVar.CommReduce]
    if len(reduce) != 2:
        return None
    n, c, y, x = out
    ry, rx = reduce
    used = [_vars_in(r.min) for r in data]
    if used[0] != {n} or used[1] != {c} or used[2] != {y, ry} or used[3] != {x, rx}:
        return None
    return n, c, y, x, ry, rx


def _row_chunk(x_extent: int, lanes: int) -> int:
    """A vector's worth of output columns: all of a short row, else the largest divisor up to the lanes."""
    if x_extent <= 2 * lanes:
        return x_extent
    return max(d for d in range(1, lanes + 1) if x_extent % d == 0)
