"""What the schedule rules share: the rule interface, and what they need to know of a CPU target (vector lanes, cores, layout-free buffers)."""

from __future__ import annotations


class Rule:
    """A schedule rule: `_schedule(sch, func, target)` schedules a kernel it matches and says whether it did."""

    name = "rule"

    def apply(self, func, target, _tunable=False):
        """The kernel's schedule, or None where the rule does not match (TVM's default code stays)."""
        from tvm.s_tir import Schedule

        try:
            sch = Schedule(func)
            return sch if self._schedule(sch, func, target) else None
        except Exception:  # a schedule primitive refused this kernel: TVM's default code stays
            return None

    def _schedule(self, sch, func, target) -> bool:
        raise NotImplementedError


# The register tile's accumulator: TVM puts a small "global" buffer on the stack, where LLVM keeps it
# in registers, but serves a "local" one from TVMBackendAllocWorkspace, whose pointer LLVM cannot
# prove apart from the operands once a symbolic batch is in the indices (every FMA then stores).
ACCUMULATOR_SCOPE = "global"

# Below this many multiply-adds a kernel runs serially: waking the second core's thread costs
# more than the work (measured on a 2-core Zen 3 at batch 1: parallel small kernels lost badly).
PARALLEL_MIN_WORK = 1 << 18
# Copies and pooling windows (little work per element) go parallel from this many elements per image.
PARALLEL_MIN_ELEMENTS = PARALLEL_MIN_WORK // 4


def vector_lanes(target, dtype_bits: int = 32) -> int:
    """SIMD lanes for one register of this element width: 16 fp32 with AVX-512, 8 with AVX2, 4 else."""
    from tvm.target.codegen import target_has_features

    if target.kind.name != "llvm":
        return 4
    if _has(target_has_features, "avx512f", target):
        bits = 512
    elif _has(target_has_features, "avx", target):
        bits = 256
    else:
        bits = 128  # SSE, NEON
    return max(1, bits // dtype_bits)


def vector_registers(target) -> int:
    """Architectural SIMD registers: 32 with AVX-512 and on aarch64, 16 with AVX/SSE."""
    from tvm.target.codegen import target_has_features

    triple = str(target.attrs.get("mtriple", ""))
    if triple.startswith(("aarch64", "arm64")) or _has(target_has_features, "avx512f", target):
        return 32
    return 16


def cores(target) -> int:
    return int(target.attrs.get("num-cores", 1) or 1)


def _has(check, feature: str, target) -> bool:
    try:
        return bool(check(feature, target))
    except Exception:  # a target LLVM cannot describe (no mcpu): assume the baseline
        return False


def static_extent(extent, unknown: int = 1) -> int:
    """An extent as an int; a symbolic one (the batch) counts as `unknown`."""
    import tvm

    if isinstance(extent, int):
        return extent
    return int(extent.value) if isinstance(extent, tvm.tirx.IntImm) else unknown
