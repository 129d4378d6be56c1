"""Work per inference from the ONNX graph, and this machine's peak, measured rather than assumed.

A result's `gflops_per_s` is the graph's FLOPs over its median latency (the mean would let a
few descheduled calls speak for all); `peak_share` is that over
the best matmul throughput a short probe reaches here. Small models sit far below the peak:
they are bound by per-call overhead and memory traffic, which `gbytes_per_s` shows.

The probe takes the best of small matmuls (in cache, short enough to land between other
processes' time slices) and large ones run by ONNX Runtime's MLAS on every core (the only way
to keep all cores' FMA units busy): a peak below what a model's convolutions reach would make
`% peak` read over 100%. A probe on a shared 2-core VM still reads anywhere from 90 to 160 GFLOP/s
from one run to the next, so on x86 the peak is the instruction set's FMA peak at the clock the
kernel reports (`fma_peak`), or the probe where that is higher (a core boosting above it).
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import numpy as np

from toolkit.bench.results import Cost
from toolkit.runtime.tvm_runtime import physical_cores

# Square fp32 matmuls of these sizes: cached in L2, near BLAS's peak, and short (well under a
# millisecond), so the best of many calls lands between other processes' time slices and
# approaches the uncontended peak even on a shared machine. A large matmul is always preempted there.
PROBE_SIZES = (128, 256)
SATURATING_SIZE = 1024  # ONNX Runtime's multi-threaded sgemm at this size keeps every core busy
STREAM_BYTES = 64 * 2**20  # copied for the memory probe: past every cache


MIN_PROBE_CALLS = 50


def measure_peak(device: str = "cpu", seconds: float = 0.2) -> dict:
    """Best fp32 matmul GFLOP/s (numpy's BLAS and torch, every probe size; the fastest counts) and copy GB/s."""
    if device == "cuda":
        return _cuda_peak(seconds)
    probes = {}
    for size in PROBE_SIZES:
        probes[("numpy", size)] = _best_rate(_numpy_matmul(size), size, seconds)
        torch_probe = _torch_matmul("cpu", size)
        if torch_probe is not None:
            probes[("torch", size)] = _best_rate(torch_probe, size, seconds)
    probes[("onnxruntime", SATURATING_SIZE)] = _best_rate(_ort_matmul(SATURATING_SIZE), SATURATING_SIZE, seconds)
    (library, size), gflops = max(probes.items(), key=lambda kv: kv[1])
    probe = (f"fp32 matmul {size}x{size} ({library}; best call of {seconds:g} s; numpy and torch at "
             f"{', '.join(map(str, PROBE_SIZES))}, onnxruntime on every core at {SATURATING_SIZE} tried)")
    isa = _this_cpus_fma_peak()
    if isa and isa["gflops"] >= gflops:
        probe = f"{isa['how']}; the matmul probe read {gflops:.1f}: {probe}"
        gflops = isa["gflops"]
    return {
        "gflops": gflops,
        "gbytes_per_s": _copy_bandwidth(seconds),
        "probe": f"{probe}; copy of {STREAM_BYTES >> 20} MiB",
    }


def fma_peak(cpuinfo: str, cores: int) -> dict | None:
    """fp32 GFLOP/s of an x86 CPU's FMA units at the clock /proc/cpuinfo reports; None if it names no FMA.

    Zen 2-4 retire two 256-bit FMAs a cycle (Zen 4 splits an AVX-512 one in two halves), Zen 5 and
    AVX-512 Intel server cores two 512-bit ones. A boosting core can pass this figure.
    """
    flags_line = re.search(r"^flags\s*:(.*)$", cpuinfo, re.M)
    flags = set(flags_line.group(1).split()) if flags_line else set()
    mhz = re.search(r"^cpu MHz\s*:\s*([\d.]+)", cpuinfo, re.M)
    if not mhz or "fma" not in flags:
        return None
    family = re.search(r"^cpu family\s*:\s*(\d+)", cpuinfo, re.M)
    amd = "AuthenticAMD" in cpuinfo
    wide_units = "avx512f" in flags and not (amd and family and int(family.group(1)) < 26)
    lanes = 16 if wide_units else 8
    flops_per_cycle = 2 * lanes * 2  # two FMA units, a multiply and an add per lane
    ghz = float(mhz.group(1)) / 1e3
    return {
        "gflops": cores * ghz * flops_per_cycle,
        "how": f"fp32 FMA peak: {cores} cores x {ghz * 1e3:.0f} MHz x 2 FMA units x {lanes} lanes x 2",
    }


def result_cost(cost: dict, latency_ms: float) -> Cost:
    """The graph's work at this batch (graph_cost's dict) and how fast it was done at `latency_ms`."""
    seconds = latency_ms / 1e3
    return Cost(
        flops=cost["flops"],
        bytes=cost["bytes"],
        gflops_per_s=cost["flops"] / seconds / 1e9 if seconds else None,
        gbytes_per_s=cost["bytes"] / seconds / 1e9 if seconds else None,
    )


def best_peak(*peaks: dict) -> dict:
    """The fastest of several probes (say, before and after a run): contention only ever slows one."""
    return max(peaks, key=lambda p: p.get("gflops") or 0.0)


def _this_cpus_fma_peak() -> dict | None:
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    return fma_peak(cpuinfo, physical_cores())


def _best_rate(call, size: int, seconds: float) -> float:
    call()  # first call allocates and spins up threads
    flops = 2 * size**3
    best = float("inf")
    calls = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or calls < MIN_PROBE_CALLS:
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
        calls += 1
    return flops / best / 1e9


def _numpy_matmul(size: int):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    out = np.empty_like(a)
    return lambda: np.matmul(a, b, out=out)


def _ort_matmul(size: int):
    """A one-MatMul ONNX graph on ONNX Runtime with a thread per core."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])], "probe",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [size, size]) for n in ("a", "b")],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [size, size])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = min(model.ir_version, onnx.IR_VERSION)
    options = ort.SessionOptions()
    options.intra_op_num_threads = os.cpu_count() or 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {n: rng.standard_normal((size, size), dtype=np.float32) for n in ("a", "b")}
    return lambda: session.run(None, feeds)


def _torch_matmul(device: str, size: int):
    try:
        import torch
    except ImportError:
        return None
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    out = torch.empty_like(a)
    if device == "cuda":
        def call():
            torch.mm(a, b, out=out)
            torch.cuda.synchronize()
        return call
    return lambda: torch.mm(a, b, out=out)


def _copy_bandwidth(seconds: float) -> float:
    """GB/s of a large copy, read plus write counted, best of several."""
    src = np.ones(STREAM_BYTES // 4, np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    best = float("inf")
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - start)
    return 2 * STREAM_BYTES / best / 1e9


def _cuda_peak(seconds: float) -> dict:
    size = 4096  # a GPU needs a large matmul to fill it
    probe = _torch_matmul("cuda", size)
    if probe is None:
        return {"gflops": None, "gbytes_per_s": None, "probe": "no torch with CUDA to probe the GPU"}
    return {"gflops": _best_rate(probe, size, seconds), "gbytes_per_s": None,
            "probe": f"fp32 matmul {size}x{size} (torch on cuda, best call of {seconds:g} s)"}
