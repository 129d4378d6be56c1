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
from toolkit.schedules.conv2d import Conv2d

# The blocks topi.nn.conv2d_transpose_nchw (TVM's legalization of relax.nn.conv2d_transpose) creates.
DILATE, PAD, KERNEL = "data_dilate", "data_pad", "kernel_transform"


class ConvTranspose(cpu.Rule):
    name = "conv-transpose"

    def _schedule(self, sch, func, target) -> bool:
        blocks = {sch.get(b).name_hint: b for b in sch.get_child_blocks(sch.get_sblock("root"))}
        if not {DILATE, PAD, KERNEL} <= set(blocks) or not _reads_parameter(sch.get(blocks[KERNEL]), func):
            return False
        sch.annotate(blocks[KERNEL], "meta_schedule.layout_rewrite_preproc", True)
        sch.compute_inline(blocks[DILATE])
        if not Conv2d()._schedule(sch, func, target):
            return False
        update = next(b for b in sch.get_child_blocks(sch.get_sblock("root")) if sch.get(b).name_hint.endswith("_update"))
        # The flipped weight, as conv2d packs a weight: nr output channels contiguous (the vector loop)
        nr = cpu.static_extent(sch.get(sch.get_loops(update)[-1]).extent, unknown=0)
        if nr > 1:
            weight = next(i for i, r in enumerate(sch.get(update).reads) if r.source.same_as(sch.get(blocks[KERNEL]).writes[0].source))
            sch.transform_layout(update, ("read", weight), lambda f, c, kh, kw: (f // nr, c, kh, kw, f % nr))
            # and the accumulator with those channels innermost, so each vector of it is contiguous
            # (NCHW puts the output row there, and LLVM then gathers and scatters every step)
            sch.transform_layout(update, ("write", 0), lambda n, f, y, x: (n, f // nr, y, x, f % nr))
        return True


def _reads_parameter(block, func) -> bool:
    """Whether the weight flip reads a function parameter (a weight), so it can be folded."""
    return len(block.reads) == 1 and any(block.reads[0].source.same_as(p) for p in func.params)
