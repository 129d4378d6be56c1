"""Row-wise reductions on CPUs: softmax, layer norm, mean and similar chains of blocks.

Matches kernels whose blocks all start with the same spatial axes (the rows) and end in an
elementwise block, with at least one reduction among them: softmax is max (SR) -> exp (SS) ->
sum (SR) -> divide (SS). Every block is computed row by row under the output's row loop, so a
row stays in L1 between the steps; elementwise steps are vectorized, reductions walk their row
in vector-sized chunks. As TVM's dlight `cpu.Reduction`, except that rows run on several cores
only when there is enough work, and the vector width comes from the target's features.
"""

from __future__ import annotations

from toolkit.schedules import cpu


class RowReduction(cpu.Rule):
    name = "row-reduction"

    def _schedule(self, sch, func, target) -> bool:
        from tvm.s_tir.dlight.analysis import normalize_prim_func

        infos = normalize_prim_func(sch)
        if infos is None or len(infos) < 2 or not infos[-1].is_injective():
            return False
        if all(info.is_injective() for info in infos):
            return False
        kinds = [info.dom_kind() for info in infos]
        if any(not k or k[0] != "S" for k in kinds):
            return False
        rows_axes = min(len(k) - len(k.lstrip("S")) for k in kinds)
        last = infos[-1]
        loops = sch.get_loops(last.block_rv)
        if rows_axes >= len(loops):  # nothing left inside a row
            rows_axes = len(loops) - 1
        if rows_axes < 1:
            return False
        row = sch.fuse(*loops[:rows_axes]) if rows_axes > 1 else loops[0]
        lanes = cpu.vector_lanes(target)

        elements = 1
        for extent in (i.dom for i in last.iters):
            elements *= cpu.static_extent(extent)
        if cpu.cores(target) > 1 and elements >= cpu.PARALLEL_MIN_WORK // 4:
            sch.parallel(row)
        _vectorize_inner(sch, last.block_rv, lanes)
        for info in reversed(infos[:-1]):
            sch.compute_at(info.block_rv, row, preserve_unit_loops=True)
        for info in infos[:-1]:
            if info.is_injective():
                _vectorize_inner(sch, info.block_rv, lanes)
            else:
                _unroll_inner(sch, info.block_rv, lanes)
        return True


def _vectorize_inner(sch, block, lanes: int) -> None:
    loops = sch.get_loops(block)
    if len(loops) <= 1:
        return
    extent = cpu.static_extent(sch.get(loops[-1]).extent, unknown=0)
    if not extent:
        # A symbolic row (softmax over attention's keys): split into vectors, its tail would need a
        # per-lane predicate, which TVM scalarizes; whole, LLVM vectorizes it with a remainder loop.
        return
    if extent <= lanes:
        if extent >= 2:
            sch.vectorize(loops[-1])
        return
    _, inner = sch.split(loops[-1], [None, lanes])
    sch.vectorize(inner)


def _unroll_inner(sch, block, lanes: int) -> None:
    """Reductions stay scalar (rfactor does not compose with compute_at); unroll by a vector's width."""
    loops = sch.get_loops(block)
    extent = cpu.static_extent(sch.get(loops[-1]).extent, unknown=0)
    if extent > lanes:
        outer, _ = sch.split(loops[-1], [None, lanes])
        sch.annotate(outer, "pragma_auto_unroll_max_step", lanes)
        sch.annotate(outer, "pragma_unroll_explicit", 1)
