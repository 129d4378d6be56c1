"""2-D convolutions in NCHW on CPUs: output channels in vector registers, packed weights.

Matches the one multiply-add reduction block of a fused kernel that reads
O[n, f, y, x] += P[n, c, y*s + ry*d, x*s + rx*d] * W[f, c, ry, rx] (plain, strided, dilated,
1x1 and grouped, where the input channel is g * C/groups + c). The schedule follows the x86
NCHWc schedules TVM had until 0.19, without changing the activations' layout:

    for n:
      P[n] = pad(input[n])                      # rows in parallel where large enough
      for F/nr, Y/yt, X/xt (parallel when the kernel is large enough):
        acc[yt, xt, nr] = 0                     # yt x xt x nr/lanes vector registers
        for c, ry, rx: acc[yy, xx, :] += P[n, c, y+yy+ry, x+xx+rx] * W[f:f+nr, c, ry, rx]  (yy, xx unrolled)
        O[n, f:f+nr, y:y+yt, x:x+xt] = epilogue(acc)  # bias, activation, residual add: fused

Where the input outweighs the weights (early layers), the rows are the outer parallel loop instead
(for Y/yt: P = the rows' padded window; for F/nr, X/xt: ...), so the input is read once.

The weight is re-laid out as [F/nr, C, KH, KW, nr] at compile time, so each step loads nr
contiguous output channels. Depthwise convolutions (one input channel per group), and those with
fewer output channels than a vector, vectorize along the output row instead.
"""

from __future__ import annotations

import math

from toolkit.schedules import cpu
from toolkit.schedules.matmul import (
    _dtype_bits,
    _inline_epilogue,
    _is_multiply_add,
    _layout_free_read,
    _single_reduction_block,
)

SMALL_MAP_BYTES = 64 << 10  # an image's input channels over the output's size, in fp32: a fraction of the L2


class Conv2d(cpu.Rule):
    name = "conv2d"

    def _schedule(self, sch, func, target) -> bool:
        return schedule_conv(sch, func, target) is not None


def schedule_conv(sch, func, target, zeros_per_product: int = 1) -> int | None:
    """Schedule the kernel's convolution; the output channels of its vector tile (0: it vectorizes
    along the row instead), or None where the kernel holds no NCHW convolution. `zeros_per_product`: how many of
    the multiply-adds read a structural zero per one that does not (a transposed convolution's
    dilation), for the decision to run in parallel."""
    main = _single_reduction_block(sch)
    if main is None or not _is_multiply_add(sch.get(main)):
        return None
    block = sch.get(main)
    axes = _conv_axes(block)
    if axes is None:
        return None
    loops = sch.get_loops(main)
    if len(loops) != len(block.iter_vars):
        return None
    loop_of = {iv.var: loop for iv, loop in zip(block.iter_vars, loops)}
    extent_of = {iv.var: iv.dom.extent for iv in block.iter_vars}
    n, f, y, x, c, ry, rx = (loop_of[v] for v in axes)
    f_extent = cpu.static_extent(extent_of[axes[1]], unknown=0)
    x_extent = cpu.static_extent(extent_of[axes[3]], unknown=0)
    if not f_extent:
        return None
    lanes = cpu.vector_lanes(target, _dtype_bits(block))
    depthwise = cpu.static_extent(extent_of[axes[4]], unknown=0) == 1 and _reads_channel_of_output(block, axes)
    if not x_extent and depthwise:  # a symbolic row (an audio length): the channel-tiled path below only
        return None
    work = 1
    for v in axes[1:]:
        work *= cpu.static_extent(extent_of[v])
    parallel = cpu.cores(target) > 1 and work // zeros_per_product >= cpu.PARALLEL_MIN_WORK

    y_extent = cpu.static_extent(extent_of[axes[2]], unknown=0)
    if depthwise:
        _schedule_depthwise(sch, main, target, (n, f, y, x, c, ry, rx), lanes, x_extent, parallel)
        return 0
    group_channels = _group_channels(block, axes, f_extent)
    if (f_extent < lanes or group_channels % lanes) and x_extent >= lanes and y_extent and _unit_stride(block, axes):
        _schedule_rows(sch, main, target, (n, f, y, x, c, ry, rx), lanes, (f_extent, y_extent, x_extent), parallel,
                       group_channels)
        return 0
    nr, yt, xt = _register_tile(target, lanes, f_extent, y_extent, x_extent, group_channels)
    groups = []
    if group_channels < f_extent:  # the group as a loop of its own: its input channels are g * C/groups + c
        group, f = sch.split(f, [None, group_channels])
        groups = [group]
    fo, fi = sch.split(f, [None, nr])
    # The register block covers yt rows of xt columns, so narrow late layers (7x7, 2x2) still fill it.
    yo, yi = sch.split(y, [None, yt])
    xo, xi = sch.split(x, [None, xt])
    # One image at a time, its padded copy made just before (large maps): with the batch inside the
    # tile, 8 images' channel planes per tile thrashed the L1 and batch 8 ran at 2/3 of batch 1's speed.
    conv_extents = tuple(cpu.static_extent(extent_of[v]) for v in axes[1:])
    padded = block.reads[0].source.shape  # the padded copy's [N, C, H, W]
    input_pixels = cpu.static_extent(padded[2]) * cpu.static_extent(padded[3])
    rows_first = parallel and not groups and _rows_first(conv_extents, input_pixels, yt, cpu.cores(target))
    if rows_first:
        sch.reorder(n, yo, fo, xo, c, ry, rx, yi, xi, fi)
    else:
        sch.reorder(n, *groups, fo, yo, xo, c, ry, rx, yi, xi, fi)
    _pack_weight(sch, func, main, axes, nr, f_extent)
    # Small maps (VGG's 16x16 and below): the batch joins the parallel tiles, so that a batch is one
    # parallel launch and one padded copy rather than one of each per image (VGG 5-8% faster at batch 8).
    _, rows, columns, channels, _, _ = conv_extents
    batch_in_tiles = parallel and not rows_first and channels * rows * columns * 4 <= SMALL_MAP_BYTES
    tile = xo
    if rows_first:
        sch.parallel(yo)
    elif batch_in_tiles:
        tile = sch.fuse(n, *groups, fo, yo, xo)
        sch.parallel(tile)
    elif parallel:
        tile = sch.fuse(*groups, fo, yo, xo)
        sch.parallel(tile)
    acc = sch.cache_write(main, 0, cpu.ACCUMULATOR_SCOPE)
    # The accumulator tile as [pixel][f]: each register holds nr contiguous channels.
    sch.transform_layout(main, ("write", 0), lambda n, f, y, x: (n, y, x, f))
    _inline_epilogue(sch, acc)
    sch.reverse_compute_at(acc, tile)
    sch.unroll(yi)
    sch.unroll(xi)
    sch.vectorize(fi)
    sch.unroll(rx)
    init = sch.decompose_reduction(main, c)
    *_, y_init, x_init, f_init = sch.get_loops(init)
    sch.unroll(y_init)
    sch.unroll(x_init)
    sch.vectorize(f_init)
    if rows_first:
        _pad_per_row(sch, main, yo)
    elif batch_in_tiles:
        _schedule_padding(sch, main, target)
    else:
        _schedule_padding(sch, main, target, n)
    *_, row = sch.get_loops(acc)  # the write-back walks the tile in NCHW order: x is contiguous
    sch.vectorize(row)
    return nr


def _schedule_rows(sch, main, target, loops, lanes: int, extents, parallel: bool, group_channels: int) -> None:
    """Channels no vector of them fits, for stride 1: fewer output channels than a vector (a
    generator's RGB output), or groups of a channel count the vector does not divide (ShuffleNet's
    34 and 68). The register block is a few channels of one group (all F where there are no groups)
    x several rows x one vector of columns."""
    n, f, y, x, c, ry, rx = loops
    f_extent, y_extent, x_extent = extents
    registers = cpu.vector_registers(target) - 4
    outer = []
    f_tile = f_extent
    if group_channels < f_extent:  # the group a loop of its own, so a tile reads one group's input channels
        f_tile = max(d for d in range(1, registers // 2 + 1) if group_channels % d == 0)
        group, f = sch.split(f, [None, group_channels])
        channel_tile, f = sch.split(f, [None, f_tile])
        outer = [group, channel_tile]
    xo, xi = sch.split(x, [None, _vector_tile(x_extent, lanes)])
    most = max(1, registers // f_tile)
    yt = max(d for d in range(1, y_extent + 1) if y_extent % d == 0 and d <= most)
    yo, yi = sch.split(y, [None, yt])
    sch.reorder(n, *outer, yo, xo, c, ry, rx, f, yi, xi)
    tile = xo
    if parallel:
        tile = sch.fuse(*outer, yo, xo)
        sch.parallel(tile)
    acc = sch.cache_write(main, 0, cpu.ACCUMULATOR_SCOPE)
    _inline_epilogue(sch, acc)
    sch.reverse_compute_at(acc, tile)
    sch.unroll(f)
    sch.unroll(yi)
    sch.vectorize(xi)
    sch.unroll(rx)
    init = sch.decompose_reduction(main, c)
    *_, f_init, y_init, x_init = sch.get_loops(init)
    sch.unroll(f_init)
    sch.unroll(y_init)
    sch.vectorize(x_init)
    _schedule_padding(sch, main, target, n)
    sch.vectorize(sch.get_loops(acc)[-1])


def _unit_stride(block, axes) -> bool:
    """Whether the input's column index is x + rx (stride 1, no dilation), so a row of outputs reads a contiguous row."""
    from tvm import sym

    index = block.reads[0].region[3].min
    x, rx = axes[3], axes[6]
    return [int(v) for v in sym.detect_linear_equation(index, [x, rx])[:2]] == [1, 1]


def _schedule_depthwise(sch, main, target, loops, lanes: int, x_extent: int, parallel: bool) -> None:
    """One input channel per output channel: vectorize along the output row instead."""
    n, f, y, x, c, ry, rx = loops
    xo, xi = sch.split(x, [None, _vector_tile(x_extent, lanes)])
    sch.reorder(n, f, y, xo, c, ry, rx, xi)
    if parallel:
        sch.parallel(sch.fuse(f, y))
    acc = sch.cache_write(main, 0, cpu.ACCUMULATOR_SCOPE)
    _inline_epilogue(sch, acc)
    sch.reverse_compute_at(acc, xo)
    sch.vectorize(xi)
    sch.unroll(rx)
    init = sch.decompose_reduction(main, c)
    sch.vectorize(sch.get_loops(init)[-1])
    _schedule_padding(sch, main, target)
    sch.vectorize(sch.get_loops(acc)[-1])


def _rows_first(extents: tuple[int, ...], input_pixels: int, rows_per_tile: int, cores: int) -> bool:
    """Whether the output rows are the outer, parallel loop, with the output channel blocks inside.

    Channel blocks outermost (the default) read each block's weights once and the whole input once
    per block: right where the weights outweigh the input (ResNet's 7x7 and 14x14 layers). Where the
    input outweighs the weights (its 56x56 layers and stem), rows outermost read the input once, each
    row's padded window made just before by the thread that reads it, while the weights stay in the
    L2: ResNet-18 ran 9% faster at batch 1 and 6% at batch 8 (Zen 3). Only with enough rows to share
    evenly among the cores.
    """
    f, y, x, c, ry, rx = extents  # output channels, rows, columns; input channels, kernel rows, columns
    # input_pixels: rows x columns of the (padded) input, four times the output's at stride 2
    weights = f * c * ry * rx
    inputs = c * input_pixels
    return y // rows_per_tile >= 8 * cores and weights <= inputs


def _pad_per_row(sch, main, row) -> None:
    """The padded input made under the row loop: only the rows that row reads, in a buffer of its own."""
    for producer in sch.get_producers(main):
        if sch.get(producer).name_hint.startswith(("pad", "data_pad")):
            sch.compute_at(producer, row)
            sch.vectorize(sch.get_loops(producer)[-1])


def _schedule_padding(sch, main, target, image=None) -> None:
    """The padded copy of the input (the producer left in the kernel): rows in parallel; one
    image at a time (under the loop `image`) where given."""
    for producer in sch.get_producers(main):
        if sch.get(producer).name_hint.startswith(("pad", "data_pad")):
            if image is not None:
                sch.compute_at(producer, image)
            loops = sch.get_loops(producer)[1 if image is not None else 0 :]
            elements = 1
            for loop in loops:
                elements *= cpu.static_extent(sch.get(loop).extent)
            if len(loops) > 1 and cpu.cores(target) > 1 and elements >= cpu.PARALLEL_MIN_ELEMENTS:
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


def _group_channels(block, axes, f_extent: int) -> int:
    """Output channels per group: F for a plain convolution, F / groups for a grouped one.

    A grouped convolution reads input channel (f // (F/groups)) * C/groups + c. A register tile
    of channels that straddles two groups reads a different input channel in each lane, a gather
    per multiply-add (ShuffleNet's 4-group 1x1 convolutions of 68 channels per group, 16 per tile,
    ran 20-50x slower than ONNX Runtime); the tile must divide the channels of one group.
    """
    if axes[1] not in _vars_in(block.reads[0].region[1].min):
        return f_extent
    data = block.reads[0].source
    in_channels = cpu.static_extent(data.shape[1], unknown=0)
    group_in = cpu.static_extent(block.iter_vars[4].dom.extent, unknown=0)
    if not in_channels or not group_in or in_channels % group_in:
        return f_extent
    groups = in_channels // group_in
    return f_extent // groups if f_extent % groups == 0 else 1


def _register_tile(target, lanes: int, f_extent: int, y_extent: int, x_extent: int,
                   group_channels: int) -> tuple[int, int, int]:
    """(output channels, rows, columns) of the accumulator tile: the one with the most accumulators.

    Two vectors of channels (where they divide F) take up to (registers - 4) / 2 pixels, leaving
    registers for the broadcast input and the weights; one vector takes up to registers / 2 - 1
    (a 7x7 layer: 7 pixels of one vector beat 1 pixel of two, measured on a Zen 3). Pixels are
    rows x columns that divide the output, wider rather than taller. In a grouped convolution the
    channels of a tile stay within one group: they divide `group_channels` (half a vector for
    ShuffleNet's 68 per group).
    """
    registers = cpu.vector_registers(target)
    options = []
    if group_channels % (2 * lanes) == 0:
        options.append((2 * lanes, (registers - 4) // 2))
    if group_channels < f_extent:  # grouped: the channels of a tile stay within one group
        options.append((math.gcd(group_channels, lanes), registers // 2 - 1))
    else:
        options.append((lanes if f_extent >= lanes else f_extent, registers // 2 - 1))
    if not x_extent:  # a symbolic row (wav2vec2's audio frames): one row of columns, the last tile predicated
        return _best_tile(options, lanes, lambda most: (1, most))[1]
    best = _best_tile(options, lanes, lambda most: _pixel_tile(y_extent or 1, x_extent, most))
    accumulators = best[0][0]
    if accumulators < registers // 4 and x_extent > min(most for _, most in options):
        # A prime-sized output (13x13, SqueezeNet's last maps) divides into single pixels: a row of
        # columns with a predicated tail instead (1 -> 5 pixels, 3.2x -> 1.1x ONNX Runtime's time).
        best = _best_tile(options, lanes, lambda most: _predicated_pixel_tile(x_extent, min(most, x_extent)))
    return best[1]


def _best_tile(options, lanes: int, pixel_tile) -> tuple[tuple[int, int], tuple[int, int, int]]:
    """((accumulators, channels), (channels, rows, columns)) of the option with the most accumulators."""
    best = None
    for nr, most in options:
        yt, xt = pixel_tile(most)
        score = (yt * xt * -(-nr // lanes), nr)
        if best is None or score > best[0]:
            best = (score, (nr, yt, xt))
    return best


def _pixel_tile(y_extent: int, x_extent: int, most: int) -> tuple[int, int]:
    rows = [d for d in range(1, y_extent + 1) if y_extent % d == 0]
    columns = [d for d in range(1, x_extent + 1) if x_extent % d == 0]
    _, xt, yt = max((yt * xt, xt, yt) for yt in rows for xt in columns if yt * xt <= most)
    return yt, xt


def _predicated_pixel_tile(x_extent: int, most: int) -> tuple[int, int]:
    """A row of columns that need not divide the output, the last tile cut short by a predicate:
    as wide as leaves the fewest columns computed for nothing."""
    return 1, min(range(most, most // 2, -1), key=lambda xt: -(-x_extent // xt) * xt)


def _vector_tile(x_extent: int, lanes: int) -> int:
    """Columns per vector: a whole vector where the row allows, else a divisor of the row over half
    a vector (14 -> 7): a vector of a row's tail is masked, and its accumulator then spans the whole
    output rather than the tile."""
    if x_extent % lanes == 0 or x_extent < lanes:
        return min(x_extent, lanes)
    return next((d for d in range(lanes - 1, lanes // 2, -1) if x_extent % d == 0), lanes)


def _pack_weight(sch, func, main, axes, nr: int, f_extent: int) -> bool:
    """Re-lay a layout-free OIHW weight as [O/nr, I, H, W, nr]; `tune.build` folds it into the constants."""
    block = sch.get(main)
    if f_extent % nr or _layout_free_read(func, block) != 1:
        return False
    rewrite = sch.cache_read(main, 1, "global")
    sch.annotate(rewrite, "meta_schedule.layout_rewrite_preproc", True)
    sch.transform_layout(main, ("read", 1), lambda o, i, h, w: (o // nr, i, h, w, o % nr))
    return True
