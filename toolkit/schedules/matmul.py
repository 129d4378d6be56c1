"""Dense, matmul and batch-matmul on CPUs: a register-tiled, vectorized GEMM with packed weights.

Matches the one reduction block of a fused kernel whose accesses read C[S, I, J] += A[S, I, K] *
B[S, J, K] (any order of the axes within each buffer, several I axes allowed: GPT's (B, T, C) x
(C, 4C) fuses B and T). The schedule is the classic CPU GEMM micro-kernel:

    for S, I/mr, J/nr (parallel when the kernel is large enough):
        acc[mr, nr] = 0                       # registers: mr x nr/lanes vectors
        for K: acc[ii, :] += A[i, k] * B[k, j:j+nr]   (ii unrolled, j vectorized)
        out[i, j] = epilogue(acc)             # bias, activation: fused, vectorized

A weight (a layout-free buffer) is re-laid out as [J/nr, K, nr], so each k step reads one
contiguous panel row; the re-layout is split off and folded into the constants at compile time.
"""

from __future__ import annotations

from toolkit.schedules import cpu


class Matmul(cpu.Rule):
    name = "matmul"

    def _schedule(self, sch, func, target) -> bool:
        from tvm.s_tir.dlight.gpu.matmul import IterKind, auto_inline_producers

        main = _single_reduction_block(sch)
        if main is None or not _is_multiply_add(sch.get(main)):
            return False
        kinds = _iter_kinds(sch.get(main))
        if kinds is None or kinds.count(IterKind.kIter_J) != 1 or kinds.count(IterKind.kIter_K) != 1:
            return False
        loops = sch.get_loops(main)
        if len(loops) != len(kinds):
            return False
        extents = [iv.dom.extent for iv in sch.get(main).iter_vars]
        by_kind = {kind: [loop for loop, k in zip(loops, kinds) if k == kind] for kind in IterKind}
        j_extent = extents[kinds.index(IterKind.kIter_J)]
        k_extent = extents[kinds.index(IterKind.kIter_K)]
        i_extent = 1
        for extent, kind in zip(extents, kinds):
            if kind in (IterKind.kIter_I, IterKind.kIter_S):
                i_extent *= cpu.static_extent(extent)

        if not cpu.static_extent(j_extent, unknown=0):
            return _stream_symbolic_columns(sch, main, by_kind)
        lanes = cpu.vector_lanes(target, _dtype_bits(sch.get(main)))
        padded = _pad_symbolic_rows(sch, main, target, lanes, kinds, extents)
        if padded:
            loops = sch.get_loops(main)
            by_kind = {kind: [loop for loop, k in zip(loops, kinds) if k == kind] for kind in IterKind}
        sch.reorder(*by_kind[IterKind.kIter_T], *by_kind[IterKind.kIter_S], *by_kind[IterKind.kIter_I],
                    *by_kind[IterKind.kIter_J], *by_kind[IterKind.kIter_K])
        # Only the innermost I axis is tiled: fusing several (batch x tokens) would make the
        # accumulator's write-back cover rows its tile never computed.
        # No I axis: a single row (a GEMV at batch 1), tiled along J only.
        *outer_i, i = by_kind[IterKind.kIter_I] or [None]
        streamed = []  # symbolic rows, one at a time past each weight panel
        if not padded and i is not None and not cpu.static_extent(sch.get(i).extent, unknown=0):
            # Nor is a symbolic one (the batch): the tail's predicate would keep TVM from shrinking the
            # accumulator to its tile, which would then live in memory, sized by the batch. Rows go
            # one by one inside the column panel loop instead, so the K x nr panel stays in L1.
            streamed, outer_i, i = outer_i + [i], [], None
        outer = by_kind[IterKind.kIter_T] + by_kind[IterKind.kIter_S] + outer_i
        mr, nr = _register_tile(target, lanes, cpu.static_extent(j_extent, unknown=0),
                                sch.get(i).extent if i is not None else 1)
        (j,) = by_kind[IterKind.kIter_J]
        (k,) = by_kind[IterKind.kIter_K]
        io, ii = sch.split(i, [None, mr]) if i is not None else (None, None)
        jo, ji = sch.split(j, [None, nr])
        rows = [io] if io is not None else []
        sch.reorder(*rows, jo, *streamed, k, *([ii] if ii is not None else []), ji)

        if not padded:
            auto_inline_producers(sch, main)
        _pack_weight(sch, func, main, nr, j_extent)
        work = i_extent * cpu.static_extent(j_extent) * cpu.static_extent(k_extent)
        if cpu.cores(target) > 1 and work >= cpu.PARALLEL_MIN_WORK:
            # A symbolic axis (the batch) stays a serial loop outside the parallel one, whose extent
            # and index arithmetic then stay static.
            static = [loop for loop in (*outer, *rows) if cpu.static_extent(sch.get(loop).extent, unknown=0)]
            symbolic = [loop for loop in (*outer, *rows) if loop not in static]
            if symbolic and static:
                sch.reorder(*symbolic, *static)
            jo = sch.fuse(*static, jo)
            sch.parallel(jo)
        acc = sch.cache_write(main, 0, cpu.ACCUMULATOR_SCOPE)
        _contiguous_accumulator(sch, main, kinds.index(IterKind.kIter_J))
        _inline_epilogue(sch, acc, into_write_back=not padded)
        sch.reverse_compute_at(acc, streamed[-1] if streamed else jo)
        if padded:
            _epilogue_per_tile(sch, acc, jo)
        if ii is not None:
            sch.unroll(ii)
        sch.vectorize(ji)
        init = sch.decompose_reduction(main, k)
        for block in (init, acc):
            *_, row, col = sch.get_loops(block)
            sch.vectorize(col)
            if ii is not None:
                sch.unroll(row)

        return True


def _pad_symbolic_rows(sch, main, target, lanes: int, kinds, extents) -> bool:
    """Pad a symbolic row axis to the register tile's height where the rows are many (batch x
    tokens: two symbolic axes), so they are tiled as static rows are: 1.6-1.9x faster than
    streaming single rows on GPT's layers at 64 tokens. The padded rows read zeros and are never
    written back. A lone symbolic batch keeps streaming: at batch 1, padding would compute 4 rows.

    Splitting without padding would leave a predicate on the tail, which keeps TVM from shrinking
    the accumulator to its tile (it would live in memory, sized by the batch)."""
    from tvm.s_tir.dlight.gpu.matmul import IterKind, auto_inline_producers

    row_axes = [d for d, kind in enumerate(kinds) if kind in (IterKind.kIter_S, IterKind.kIter_I)]
    symbolic = [d for d in row_axes if not cpu.static_extent(extents[d], unknown=0)]
    i_axes = [d for d in row_axes if kinds[d] == IterKind.kIter_I]
    if len(symbolic) < 2 or not i_axes or i_axes[-1] not in symbolic:
        return False
    j_extent = cpu.static_extent(extents[kinds.index(IterKind.kIter_J)], unknown=0)
    mr, _ = _register_tile(target, lanes, j_extent, 0)
    padding = [1] * len(kinds)
    padding[i_axes[-1]] = mr
    auto_inline_producers(sch, main)  # before padding: the zero-padded copy of A must stay a block
    try:
        sch.pad_einsum(main, padding)
    except Exception:  # TVM refused to pad this kernel: its rows stream one by one
        return False
    return True


def _epilogue_per_tile(sch, acc, loop) -> None:
    """A padded kernel's epilogue (and its copy out of the padding), computed per tile.

    Not inlined into the write-back: reverse_compute_inline drops the bound on the padded rows
    and would write them past the output's end."""
    consumers = sch.get_consumers(acc)
    if len(consumers) != 1:
        return
    try:
        sch.reverse_compute_at(consumers[0], loop)
    except Exception:  # not elementwise over the tile: it runs over the whole output after the kernel
        return
    sch.vectorize(sch.get_loops(consumers[0])[-1])


# A symbolic J with a K this short (a head of 16) unrolls K under J: each column's sum stays in a register,
# J innermost vectorized. K outside J read and wrote the row once per k: 1.4-2.5x slower at 16 keys to 159
# (wav2vec2's 2 heads of 16). At 32 the two orders tied; at 64 the unrolled K ran 8x slower (TVM's default).
UNROLLED_K = 16


def _stream_symbolic_columns(sch, main, by_kind) -> bool:
    """A symbolic J (attention's scores: the keys): rows one by one, K outside J (or unrolled inside
    it where short), and J whole, so that LLVM vectorizes it with a remainder loop of its own. Split
    into vectors, J would need a predicate on every lane, which TVM scalarizes (5x slower than no schedule)."""
    from tvm.s_tir.dlight.gpu.matmul import IterKind, auto_inline_producers

    rows = by_kind[IterKind.kIter_T] + by_kind[IterKind.kIter_S] + by_kind[IterKind.kIter_I]
    (j,) = by_kind[IterKind.kIter_J]
    (k,) = by_kind[IterKind.kIter_K]
    short_k = 0 < cpu.static_extent(sch.get(k).extent, unknown=0) <= UNROLLED_K
    sch.reorder(*rows, *((j, k) if short_k else (k, j)))
    if short_k:
        sch.unroll(k)
    auto_inline_producers(sch, main)
    _inline_epilogue(sch, main)
    consumers = sch.get_consumers(main)
    if rows and len(consumers) == 1:
        try:
            sch.reverse_compute_at(consumers[0], rows[-1])  # the epilogue reads the row while it is in L1
        except Exception:  # not computable per row (a reduction over rows): it stays after the kernel
            pass
    sch.decompose_reduction(main, k)
    return True


def _contiguous_accumulator(sch, main, j_iter: int) -> None:
    """Lay the accumulator tile out with J innermost, so each register holds contiguous columns
    (a 1x1 convolution writes [n, f, y, x]: J is the channel, not the last axis)."""
    block = sch.get(main)
    j_var = block.iter_vars[j_iter].var
    out = [r.min for r in block.writes[0].region]
    j_dim = next((d for d, index in enumerate(out) if index.same_as(j_var)), None)
    if j_dim is None or j_dim == len(out) - 1:
        return
    sch.transform_layout(main, ("write", 0), lambda *index: (*index[:j_dim], *index[j_dim + 1:], index[j_dim]))


def _register_tile(target, lanes: int, j_extent: int, i_extent) -> tuple[int, int]:
    """(rows, columns) of the accumulator tile: as many vector registers as leaves room for operands.

    Columns: two vectors when J allows (four with AVX-512's 32 registers or for one row), else the largest
    vector multiple dividing J, else all of a small J (LLVM splits odd widths).
    Rows: 4 (6 with 32 registers), fewer when there are fewer (a GEMV has one); 5 or 6 where they
    divide the rows and the registers allow; up to 13 for one vector of columns.
    """
    registers = cpu.vector_registers(target)
    rows_here = cpu.static_extent(i_extent, unknown=0)
    nr = lanes
    # One row: more columns, so that enough independent accumulators hide the FMA latency.
    for vectors in (4, 2) if registers >= 32 or rows_here == 1 else (2,):
        if j_extent and j_extent % (vectors * lanes) == 0:
            nr = vectors * lanes
            break
    else:
        if j_extent and j_extent % lanes and j_extent <= 2 * lanes:
            nr = j_extent
    if rows_here and nr <= lanes:
        # One vector of columns leaves room for more rows (one register for the weights, one for the
        # broadcast input): SqueezeNet's 1000-channel 1x1 convolution on 13x13 maps (J = 1000 takes no
        # second vector) ran 1.5x faster at 13 rows x 8 than at 4 x 8.
        return _rows(rows_here, min(registers, 16) - 3), nr
    rows = 6 if registers >= 32 else 4
    divisor = max(d for d in range(1, (registers - 4) // 2 + 1) if rows_here % d == 0) if rows_here else 0
    if registers < 32 and rows_here > divisor > rows:
        rows = divisor  # 5 or 6 rows that divide (SqueezeNet's 55x55 maps): more accumulators, no tail
    elif rows_here and rows_here < rows:
        rows = rows_here
    elif rows_here % rows and rows_here % (rows - 1) == 0:
        rows -= 1  # a tile that divides the rows avoids a predicated tail
    return rows, nr


def _rows(extent: int, most: int) -> int:
    """Rows of a tile: all of a short extent; else the largest divisor of it from 2/3 of `most` up;
    else the count up to `most` that leaves the fewest tiles (the last one predicated), then the
    fewest rows computed for nothing."""
    if extent <= most:
        return extent
    divisor = max(d for d in range(1, most + 1) if extent % d == 0)
    if 3 * divisor >= 2 * most:
        return divisor
    return min(range(most, most // 2, -1), key=lambda rows: (-(-extent // rows), -(-extent // rows) * rows))


def _pack_weight(sch, func, main, nr: int, j_extent) -> None:
    """Re-lay a layout-free B as [..., J/nr, K, nr]; `tune.build` folds the re-layout into the weights."""
    from tvm.s_tir.dlight.gpu.matmul import IterKind

    block = sch.get(main)
    b_index = _layout_free_read(func, block)
    if b_index is None or cpu.static_extent(j_extent, unknown=0) % nr:
        return
    kinds = {iv.var: kind for iv, kind in zip(block.iter_vars, _iter_kinds(block))}
    region = block.reads[b_index].region
    dims = []
    for r in region:
        if not isinstance(r.min, type(block.iter_vars[0].var)) or r.min not in kinds:
            return  # an index that is not a plain axis: leave the layout alone
        dims.append(kinds[r.min])
    if dims.count(IterKind.kIter_J) != 1 or dims.count(IterKind.kIter_K) != 1:
        return
    j_dim, k_dim = dims.index(IterKind.kIter_J), dims.index(IterKind.kIter_K)
    others = [d for d in range(len(dims)) if d not in (j_dim, k_dim)]

    def packed(*index):
        return (*[index[d] for d in others], index[j_dim] // nr, index[k_dim], index[j_dim] % nr)

    rewrite = sch.cache_read(main, b_index, "global")
    sch.annotate(rewrite, "meta_schedule.layout_rewrite_preproc", True)
    sch.transform_layout(main, ("read", b_index), packed)


def _iter_kinds(block):
    """Each block iter's role in C[S, I, J] += A[S, I, K] * B[S, J, K] (dlight's IterKind), or None.

    As dlight's `detect_iter_traits`, except that a kernel without an I axis (one row) matches.
    """
    from tvm.s_tir.dlight.gpu.matmul import IterKind
    from tvm.tirx import IterVar

    if len(block.reads) != 2 or len(block.writes) != 1:
        return None
    regions = [block.reads[0].region, block.reads[1].region, block.writes[0].region]
    if any(not _is_one(r.extent) for region in regions for r in region):
        return None
    a, b, c = ({v for r in region for v in _vars_in(r.min)} for region in regions)
    kinds = []
    for iv in block.iter_vars:
        var = iv.var
        if _is_one(iv.dom.extent):
            kinds.append(IterKind.kIter_T)
        elif iv.iter_type == IterVar.DataPar and var in c:
            if var in a and var in b:
                kinds.append(IterKind.kIter_S)
            elif var in a:
                kinds.append(IterKind.kIter_I)
            elif var in b:
                kinds.append(IterKind.kIter_J)
            else:
                return None
        elif iv.iter_type == IterVar.CommReduce and var in a and var in b and var not in c:
            kinds.append(IterKind.kIter_K)
        else:
            return None
    return kinds


def _is_one(expr) -> bool:
    return cpu.static_extent(expr, unknown=0) == 1


def _vars_in(expr) -> set:
    from tvm.tirx.analysis import undefined_vars

    return set(undefined_vars(expr))


def _layout_free_read(func, block) -> int | None:
    """The index in `block.reads` of a layout-free parameter (a weight), if it reads one."""
    indices = func.attrs.get("layout_free_buffers") if func.attrs is not None else None
    if not indices:
        return None
    free = [func.params[int(i)] for i in indices]
    for index, region in enumerate(block.reads):
        if any(region.source.same_as(param) for param in free):
            return index
    return None


def _single_reduction_block(sch):
    from tvm.tirx import IterVar

    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    reductions = [b for b in blocks if any(iv.iter_type == IterVar.CommReduce for iv in sch.get(b).iter_vars)]
    return reductions[0] if len(reductions) == 1 else None


def _is_multiply_add(block) -> bool:
    from tvm import tirx

    body = block.body
    value = getattr(body, "value", None)
    if not isinstance(value, tirx.Add):
        return False
    return any(isinstance(_strip_cast(side), tirx.Mul) for side in (value.a, value.b))


def _strip_cast(expr):
    from tvm import tirx

    while isinstance(expr, tirx.Cast):
        expr = expr.value
    return expr


def _dtype_bits(block) -> int:
    from tvm.s_tir.dlight.base.utils import get_bytes

    return 8 * get_bytes(block.writes[0].source.dtype)


def _inline_epilogue(sch, block, into_write_back: bool = True) -> None:
    """Fuse the elementwise consumers (bias, activation, residual add) into the accumulator's write-back.

    Intermediate steps are first inlined into their own consumers (GELU reads its input twice),
    so that one block remains to fold into the write-back.
    """
    pending = list(sch.get_consumers(block))
    seen = set()
    while pending:
        consumer = pending.pop()
        name = sch.get(consumer).name_hint
        if name in seen:
            continue
        seen.add(name)
        following = list(sch.get_consumers(consumer))
        try:
            sch.compute_inline(consumer)
        except Exception:  # an output block, or not elementwise: it stays
            pass
        pending.extend(following)
    while into_write_back:
        consumers = sch.get_consumers(block)
        if len(consumers) != 1:
            return
        try:
            sch.reverse_compute_inline(consumers[0])
        except Exception:  # not elementwise over the output (a reduction, a reshape): keep it
            return
