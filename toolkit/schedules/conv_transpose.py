"""Transposed 2-D convolutions (ConvTranspose, as in GAN generators) on CPUs.

TVM legalizes a transposed convolution as a plain one over a zero-dilated, padded input, with the
kernel flipped and its channel axes swapped: four blocks, `data_dilate` -> `data_pad` ->
`kernel_transform` -> the convolution. Left alone, the first three run in full on every call.
This rule computes the weight flip once at compile time, straight into conv2d's packed layout (it
is marked as a weight re-layout, which `tune.build` folds into the constants), fuses the dilation
into the padding (one pass over the input per call), and schedules the convolution with the
`conv2d` rule, its accumulator laid out with the vectorized output channels innermost.

Three quarters of the multiply-adds still meet the dilation's zeros (stride 2); splitting the
output into its stride phases would skip them.
"""

from __future__ import annotations

from toolkit.schedules import cpu
from toolkit.schedules.conv2d import schedule_conv

# The blocks topi.nn.conv2d_transpose_nchw (TVM's legalization of relax.nn.conv2d_transpose) creates.
DILATE, PAD, KERNEL = "data_dilate", "data_pad", "kernel_transform"


class ConvTranspose(cpu.Rule):
    name = "conv-transpose"

    def _schedule(self, sch, func, target) -> bool:
        blocks = {sch.get(b).name_hint: b for b in sch.get_child_blocks(sch.get_sblock("root"))}
        if not {DILATE, PAD, KERNEL} <= set(blocks) or not _reads_parameter(sch.get(blocks[KERNEL]), func):
            return False
        sch.annotate(blocks[KERNEL], "meta_schedule.layout_rewrite_preproc", True)
        strides = _strides(sch.get(blocks[DILATE]))
        sch.compute_inline(blocks[DILATE])
        nr = schedule_conv(sch, func, target, zeros_per_product=strides)
        if nr is None:
            return False
        if nr > 1:
            # The flipped weight, as conv2d packs a weight: nr output channels contiguous (the vector loop)
            update = next(b for b in sch.get_child_blocks(sch.get_sblock("root")) if sch.get(b).name_hint.endswith("_update"))
            weight = next(i for i, r in enumerate(sch.get(update).reads) if r.source.same_as(sch.get(blocks[KERNEL]).writes[0].source))
            sch.transform_layout(update, ("read", weight), lambda f, c, kh, kw: (f // nr, c, kh, kw, f % nr))
            # (the accumulator already has those channels innermost: the conv2d rule lays it out [n, y, x, f])
        return True


def _reads_parameter(block, func) -> bool:
    """Whether the weight flip reads a function parameter (a weight), so it can be folded."""
    return len(block.reads) == 1 and any(block.reads[0].source.same_as(p) for p in func.params)


def _strides(dilate) -> int:
    """The product of the dilation's strides (each input row and column is followed by stride - 1 zeros)."""
    source, dilated = dilate.reads[0].source.shape, dilate.writes[0].source.shape
    product = 1
    for size, size_dilated in zip(source[2:], dilated[2:]):
        size, size_dilated = cpu.static_extent(size), cpu.static_extent(size_dilated)
        product *= (size_dilated - 1) // (size - 1) if size > 1 else 1
    return max(product, 1)
