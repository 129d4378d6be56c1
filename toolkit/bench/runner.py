"""One benchmark run: a plan (what to sweep), the environment, the measurements, the warnings."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from toolkit.bench import scenarios
from toolkit.bench.costmodel import best_peak, measure_peak
from toolkit.bench.machine import environment, skew_warnings
from toolkit.bench.results import BenchResult
from toolkit.bench.scenarios import SCENARIOS, ServerSettings
from toolkit.bench.stats import HIGH_COV, HIGH_RUN_COV, Budget
from toolkit.bench.subjects import open_subject
from toolkit.errors import DltkError
from toolkit.rpc import RpcTarget
from toolkit.sources import DEFAULT_BACKENDS, OrtOptions

SCHEMA_VERSION = "dltk-bench/1"
PRECISIONS = ("fp32", "int8", "int8-static", "int8-dynamic", "fp16")  # dltk bench --precision; see toolkit.quantize
SCHEMA_FILE = Path(__file__).with_name("schema.json")  # JSON Schema of BenchRun.to_json()


@dataclass(frozen=True)
class Plan:
    """What one `dltk bench` invocation measures: every backend x batch x thread count x scenario."""

    backends: tuple[str, ...] = DEFAULT_BACKENDS
    batches: tuple[int, ...] = (1,)
    threads: tuple[int | None, ...] = (None,)  # None: each library's default
    scenarios: tuple[str, ...] = ("single-stream",)
    device: str = "cpu"
    budget: Budget = Budget()
    server: ServerSettings = ServerSettings()
    samples_per_query: int = 8  # multi-stream
    ort: OrtOptions = OrtOptions()
    measure_peak: bool = True  # the matmul probe behind peak_share
    precisions: tuple[str, ...] = ("fp32",)  # fp32, int8, int8-static, int8-dynamic, fp16: reduced copies measured beside fp32
    rpc: RpcTarget | None = None  # measure an artifact's TVM code on a device behind this RPC tracker

    def check(self) -> None:
        unknown = [s for s in self.scenarios if s not in SCENARIOS]
        if unknown:
            raise DltkError(f"unknown scenario '{unknown[0]}'", f"use any of {', '.join(SCENARIOS)}")
        unknown = [p for p in self.precisions if p not in PRECISIONS]
        if unknown or not self.precisions:
            raise DltkError(f"unknown precision '{(unknown or [''])[0]}'", f"use any of {', '.join(PRECISIONS)}")
        if self.rpc and self.precisions != ("fp32",):
            raise DltkError("--precision runs reduced copies on this machine, not on a remote device",
                            "quantize with 'dltk quantize' and compile the result for the device")
        if "server" in self.scenarios and self.server.target_qps is None and self.server.p99_bound_ms is None:
            raise DltkError("the server scenario needs a rate or a bound",
                            "give --target-qps Q to run at Q, or --p99-bound MS to search the highest QPS under it")
        if self.server.target_qps is not None and self.server.target_qps <= 0:
            raise DltkError(f"--target-qps must be positive, got {self.server.target_qps:g}")
        if any(t is not None and t < 1 for t in self.threads):
            raise DltkError("--threads must be positive integers")
        if self.budget.repeats < 1 or self.budget.min_iterations < 1:
            raise DltkError("--repeats and --min-iterations must be at least 1")
        if self.rpc and (set(self.backends) != {"tvm"} or "server" in self.scenarios):
            raise DltkError("a remote device measures the compiled TVM code only, one call at a time",
                            "use --backend tvm with single-stream, multi-stream or offline")

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class BenchRun:
    env: dict
    plan: Plan
    results: list[BenchResult] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"schema": SCHEMA_VERSION, "env": self.env, "plan": self.plan.to_json(),
                "warnings": self.warnings, "results": [r.to_json() for r in self.results]}


def run_benchmark(sources: list[str], plan: Plan, log=lambda line: None) -> BenchRun:
    """Measure every source under the plan, side by side in one process."""
    plan.check()
    env = environment()
    run = BenchRun(env, plan, warnings=skew_warnings(env))
    if plan.rpc:
        env["remote"] = str(plan.rpc)  # env describes this host, not it
    # Every source is opened (and refused if bad) before seconds go into probing the peak.
    subjects = [open_subject(source, list(plan.backends), plan.device, plan.ort, log, rpc=plan.rpc,
                             precisions=plan.precisions) for source in sources]
    probe_peak = plan.measure_peak and not plan.rpc  # this host's peak says nothing of a remote device
    if probe_peak:
        log(f"probing this machine's peak ({plan.device})")
        env["peak"] = measure_peak(plan.device)
    for subject in subjects:
        run.results += measure_subject(subject, plan, log)
        run.warnings += [f"skipped {line}" for line in subject.skipped]
    if probe_peak:
        log("probing the peak again: the faster probe counts")
        env["peak"] = best_peak(env["peak"], measure_peak(plan.device))
    _add_peak_share(run.results, env.get("peak"))
    run.warnings += result_warnings(run.results)
    return run


def measure_subject(subject, plan: Plan, log) -> list[BenchResult]:
    budget, threads = plan.budget, list(plan.threads)
    total = _block_count(plan, len(subject.backends))
    done = [0]

    def progress(line: str) -> None:
        if line.startswith("  "):  # a detail of the current step
            return log(line)
        done[0] += 1
        log(f"[{done[0]}/{total}] {line}")

    measured = []
    for scenario in plan.scenarios:
        if scenario == "single-stream":
            measured += scenarios.single_stream(subject, plan.batches, budget, progress, threads)
        elif scenario == "multi-stream":
            measured += scenarios.multi_stream(subject, plan.samples_per_query, budget, progress, threads)
        elif scenario == "offline":
            measured += scenarios.offline(subject, plan.batches, budget, progress, threads)
        elif scenario == "server":
            measured += scenarios.server(subject, plan.batches, plan.server, budget, progress, threads)
    if subject.metrics:  # --precision: "ort:int8" rows become backend ort, precision int8, with the metric
        for result in measured:
            backend, _, precision = result.backend.partition(":")
            result.backend, result.precision = backend, precision or "fp32"
            result.metric = subject.metrics.get(result.precision)
    return measured


def result_warnings(results: list[BenchResult]) -> list[str]:
    """One line per kind of trouble, naming the results it touches."""
    noisy = [f"{r.where()} ({r.cov:.0%})" for r in results if r.cov > HIGH_COV]
    unsteady = [f"{r.where()} ({r.run_cov:.0%})" for r in results if r.run_cov > HIGH_RUN_COV]
    unmet = [r.where() for r in results
             if r.scenario == "server" and r.p99_bound_ms is not None and not r.max_qps_under_bound]
    warnings = []
    if noisy:
        warnings.append(f"latency varies a lot within runs (CoV over {HIGH_COV:.0%}) in {len(noisy)} of "
                        f"{len(results)} results: {', '.join(noisy)}; close other work and rerun")
    if unsteady:
        warnings.append(f"repeated runs disagree (median spread over {HIGH_RUN_COV:.0%}) in {len(unsteady)} results: "
                        f"{', '.join(unsteady)}; differences smaller than that spread are noise")
    if unmet:
        warnings.append(f"no QPS tried kept p99 under the bound for: {', '.join(unmet)}")
    over_peak = [r.where() for r in results if (r.peak_share or 0.0) > 1.0]
    if over_peak:
        warnings.append(f"{len(over_peak)} results ran faster than the peak ({', '.join(over_peak)}): "
                        "FLOPs are counted as the direct algorithm's, which Winograd convolutions beat, or the cores "
                        "boosted past the clock the kernel reports, or other work slowed the matmul probe")
    return warnings


def report(results: list[BenchResult]) -> dict:
    """The bench JSON document (docs/DESIGN.md) for results measured outside run_benchmark (scenario functions called directly)."""
    return {"schema": SCHEMA_VERSION, "env": environment(), "results": [r.to_json() for r in results]}


def ratio_to(results: list[BenchResult], baseline: str = "ort") -> dict[tuple, float]:
    """(model, backend, batch) -> p50 over the baseline backend's p50, for single-stream results at default threads."""
    rows = [r for r in results if r.scenario == "single-stream" and r.threads is None]
    base = {(r.model, r.batch): r.p50 for r in rows if r.backend == baseline}
    return {(r.model, r.backend, r.batch): r.p50 / base[(r.model, r.batch)] for r in rows if (r.model, r.batch) in base}


def row_ratios(results: list[BenchResult], baseline: str = "ort") -> dict[int, float]:
    """p50 of each result over the baseline backend's p50 at the same model, scenario, batch and threads.

    Keyed by the result's index in `results`; results without a baseline beside them are absent.
    """
    def key(r: BenchResult):
        return (r.model, r.scenario, r.batch, r.threads, r.precision)

    base = {key(r): r.p50 for r in results if r.backend == baseline}
    return {i: r.p50 / base[key(r)] for i, r in enumerate(results) if key(r) in base}


def precision_ratios(results: list[BenchResult]) -> dict[int, float]:
    """p50 of each reduced-precision result over the same backend's fp32 p50 (model, scenario, batch, threads)."""
    def key(r: BenchResult):
        return (r.model, r.backend, r.scenario, r.batch, r.threads)

    base = {key(r): r.p50 for r in results if r.precision == "fp32"}
    return {i: r.p50 / base[key(r)] for i, r in enumerate(results) if r.precision is not None and key(r) in base}


def _add_peak_share(results: list[BenchResult], peak: dict | None) -> None:
    if not peak or not peak.get("gflops"):
        return
    for r in results:
        if r.cost is not None and r.cost.gflops_per_s is not None:
            r.peak_share = r.cost.gflops_per_s / peak["gflops"]


def _block_count(plan: Plan, backends: int) -> int:
    per_batch = backends * len(plan.threads)
    count = 0
    for scenario in plan.scenarios:
        if scenario in ("single-stream", "offline"):
            count += per_batch * len(plan.batches) * plan.budget.repeats
        elif scenario == "multi-stream":
            count += per_batch * plan.budget.repeats
        else:
            count += per_batch * len(plan.batches)
    return count

