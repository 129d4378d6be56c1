import pytest

from toolkit.bench import costmodel


def test_peak_probe_measures_a_positive_matmul_rate():
    peak = costmodel.measure_peak("cpu", seconds=0.05)
    assert peak["gflops"] > 0.1 and peak["gbytes_per_s"] > 0.1
    assert "matmul" in peak["probe"] and "onnxruntime on every core" in peak["probe"]


def test_result_cost_divides_the_graphs_work_by_the_latency():
    cost = costmodel.result_cost({"flops": 2_000_000, "bytes": 4_000_000}, latency_ms=2.0)
    assert cost.gflops_per_s == pytest.approx(1.0)
    assert cost.gbytes_per_s == pytest.approx(2.0)


ZEN3 = "vendor_id\t: AuthenticAMD\ncpu family\t: 25\ncpu MHz\t\t: 2445.406\nflags\t\t: fpu sse avx fma avx2\n"
ZEN4 = ZEN3.replace("avx2", "avx2 avx512f avx512_vnni")
XEON = "vendor_id\t: GenuineIntel\ncpu family\t: 6\ncpu MHz\t\t: 2000.000\nflags\t\t: fpu avx fma avx2 avx512f\n"


@pytest.mark.parametrize("cpuinfo, cores, gflops", [
    (ZEN3, 2, 2 * 2.445406 * 32),  # two 256-bit FMA units
    (ZEN4, 2, 2 * 2.445406 * 32),  # AVX-512 split over the same two 256-bit units
    (XEON, 4, 4 * 2.0 * 64),  # two 512-bit FMA units
])
def test_fma_peak_counts_the_cores_clock_and_vector_width(cpuinfo, cores, gflops):
    peak = costmodel.fma_peak(cpuinfo, cores)
    assert peak["gflops"] == pytest.approx(gflops)
    assert f"{cores} cores" in peak["how"]


def test_fma_peak_is_unknown_without_fma_or_a_clock():
    assert costmodel.fma_peak(ZEN3.replace(" fma", ""), 2) is None
    assert costmodel.fma_peak(ZEN3.replace("cpu MHz", "bogomips"), 2) is None
