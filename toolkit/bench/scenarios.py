"""The four MLPerf LoadGen scenarios over a Subject's sessions.

single-stream  one query at a time, latency percentiles
multi-stream   queries of N samples, one at a time; p99 is the figure that counts
offline        batches back to back; samples/s, and the batch that gives the most
server         queries arrive as a Poisson process at a target QPS and wait their turn;
               p99 of arrival-to-answer, and a search for the highest QPS under a p99 bound

Each measurement is a block (warm-up, then timed calls), never call-by-call alternation:
ONNX Runtime's spinning threads slow whatever runs right after them. Repeated runs go
round the backends (A B C A B C ...) so a slow spell on the machine hits them all.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from toolkit.bench.costmodel import result_cost
from toolkit.bench.results import BenchResult, Cost, Latency, QpsTrial
from toolkit.bench.stats import Block, Budget, confidence_interval, run_spread, timed_block
from toolkit.bench.subjects import Subject, use_threads

SCENARIOS = ("single-stream", "multi-stream", "offline", "server")
SEARCH_STEPS = 7  # bisection steps of the server QPS search: within 1% of the bracket
MIN_ACHIEVED = 0.95  # a server run counts only when it kept up with at least this share of its target


@dataclass(frozen=True)
class ServerSettings:
    target_qps: float | None = None  # run once at this rate ...
    p99_bound_ms: float | None = None  # ... or search the highest rate whose p99 stays under this
    seed: int = 0  # of the arrival times, so reruns replay the same arrivals


Progress = Callable[[str], None]


def single_stream(subject: Subject, batches, budget: Budget = Budget(), log: Progress = lambda line: None,
                  threads=(None,), scenario="single-stream") -> list[BenchResult]:
    """Latency of one query at a time, per (threads, batch, backend), repeated runs interleaved."""
    measured = []
    for thread_count in threads:
        for batch in batches:
            feeds = subject.feeds(batch)
            blocks: dict[str, list[Block]] = {b: [] for b in subject.backends}
            for run in range(budget.repeats):
                for backend in subject.backends:
                    log(f"{scenario} {subject.model} {backend} batch {batch} threads {_threads(thread_count)} "
                        f"run {run + 1}/{budget.repeats}")
                    session = subject.session(backend, thread_count)
                    use_threads(backend, thread_count)
                    blocks[backend].append(session.timed_block(feeds, budget))
            for backend in subject.backends:
                measured.append(_latency_result(subject, backend, batch, thread_count, scenario, blocks[backend], budget))
    return measured


def multi_stream(subject: Subject, samples_per_query: int, budget: Budget = Budget(), log: Progress = lambda line: None,
                 threads=(None,)) -> list[BenchResult]:
    """Queries of N samples issued one after another; the SUT answers each as one batch."""
    measured = single_stream(subject, [samples_per_query], budget, log, threads, "multi-stream")
    for m in measured:
        m.samples_per_query = samples_per_query
    return measured


def offline(subject: Subject, batches, budget: Budget = Budget(), log: Progress = lambda line: None,
            threads=(None,)) -> list[BenchResult]:
    """Samples/s with batches run back to back (wall time, loop included); the best batch is marked."""
    measured = single_stream(subject, batches, budget, log, threads, "offline")
    for m in measured:
        m.throughput_per_s = float(np.mean(m.run_throughput_per_s))
        m.throughput_ci95 = confidence_interval(m.run_throughput_per_s)
    for key in {(m.backend, m.threads) for m in measured}:
        group = [m for m in measured if (m.backend, m.threads) == key]
        best = max(group, key=lambda m: m.throughput_per_s)
        for m in group:
            m.best = m is best
    return measured


def server(subject: Subject, batches, settings: ServerSettings, budget: Budget = Budget(),
           log: Progress = lambda line: None, threads=(None,)) -> list[BenchResult]:
    """Poisson arrivals, one worker answering in order: latency counts the wait in the queue."""
    measured = []
    for thread_count in threads:
        for batch in batches:
            feeds = subject.feeds(batch)
            for backend in subject.backends:
                session = subject.session(backend, thread_count)
                use_threads(backend, thread_count)
                call = functools.partial(session.run, feeds)
                label = f"server {subject.model} {backend} batch {batch} threads {_threads(thread_count)}"
                if settings.p99_bound_ms is None:
                    log(f"{label} at {settings.target_qps:g} QPS")
                    trial = poisson_run(call, settings.target_qps, budget, settings.seed)
                    trials, chosen = [trial], trial
                else:
                    log(f"{label}: searching the highest QPS with p99 under {settings.p99_bound_ms:g} ms")
                    # indented lines are details of the step above, not steps of their own
                    trials, chosen = search_qps(functools.partial(_poisson_trial, call, budget, settings.seed),
                                                service_rate(call, budget), settings.p99_bound_ms, lambda s: log(f"  {s}"))
                latency = Latency.of(chosen.latencies_ms)
                bound = settings.p99_bound_ms
                measured.append(BenchResult(
                    model=subject.model, backend=backend, device=subject.device, batch=batch, threads=thread_count,
                    scenario="server", latency_ms=latency, throughput_per_s=chosen.achieved_qps * batch,
                    iterations=len(chosen.latencies_ms), warmup=budget.warmup, cov=latency.cov, runs=1,
                    target_qps=chosen.target_qps, achieved_qps=chosen.achieved_qps, p99_bound_ms=bound,
                    max_qps_under_bound=None if bound is None else (chosen.target_qps if chosen.passed(bound) else 0.0),
                    search=[t.trial(bound) for t in trials], cost=_cost(subject, batch, latency.p50),
                    latencies_ms=np.asarray(chosen.latencies_ms, dtype=np.float64),
                ))
    return measured


@dataclass(frozen=True)
class PoissonRun:
    target_qps: float
    achieved_qps: float  # queries answered per second of the run
    latencies_ms: list[float]  # arrival to answer

    @property
    def p99(self) -> float:
        return float(np.percentile(self.latencies_ms, 99))

    def passed(self, bound_ms: float | None) -> bool:
        kept_up = self.achieved_qps >= MIN_ACHIEVED * self.target_qps
        return kept_up and (bound_ms is None or self.p99 <= bound_ms)

    def trial(self, bound_ms: float | None) -> QpsTrial:
        return QpsTrial(self.target_qps, self.achieved_qps, self.p99, self.passed(bound_ms))


def arrival_times(qps: float, count: int, seed: int = 0) -> np.ndarray:
    """Seconds from the start at which `count` queries arrive: a Poisson process of rate `qps`."""
    return np.cumsum(np.random.default_rng(seed).exponential(1.0 / qps, count))


def poisson_run(call: Callable[[], object], qps: float, budget: Budget, seed: int = 0) -> PoissonRun:
    """Issue queries at Poisson arrival times for at least min_iterations and min_seconds."""
    for _ in range(budget.warmup):
        call()
    count = max(budget.min_iterations, math.ceil(qps * budget.min_seconds))
    count = min(count, max(1, math.ceil(qps * budget.max_seconds)))
    latencies = []
    start = time.perf_counter()
    done = 0.0
    for arrival in arrival_times(qps, count, seed):
        _wait_until(start + arrival)
        call()
        done = time.perf_counter() - start
        latencies.append((done - arrival) * 1e3)
        if done >= budget.max_seconds:
            break
    return PoissonRun(qps, len(latencies) / max(done, 1e-9), latencies)


def _poisson_trial(call, budget: Budget, seed: int, qps: float) -> PoissonRun:
    return poisson_run(call, qps, budget, seed)


def service_rate(call, budget: Budget) -> float:
    """Queries per second one worker answers back to back: no server can keep up with more."""
    block = timed_block(call, Budget(warmup=budget.warmup, min_iterations=max(10, budget.min_iterations // 4),
                                     min_seconds=budget.min_seconds / 4, max_seconds=budget.max_seconds))
    return 1000.0 / float(np.mean(block.latencies_ms))


def search_qps(trial: Callable[[float], PoissonRun], capacity: float, bound_ms: float, log: Progress = lambda line: None):
    """The highest rate whose run passes (p99 under the bound, and it kept up), by bisection.

    Tries the service rate `capacity` first, then bisects between a twentieth of it and it.
    Returns every run tried and the best one (the slowest tried when none passed).
    """
    low, high = capacity / 20, capacity
    trials, best = [], None
    for step in range(SEARCH_STEPS):
        qps = high if step == 0 else (low + high) / 2
        run = trial(qps)
        trials.append(run)
        ok = run.passed(bound_ms)
        log(f"{qps:,.0f} QPS: p99 {run.p99:.3f} ms, achieved {run.achieved_qps:,.0f} QPS -> {'ok' if ok else 'over'}")
        if ok:
            best = run if best is None or run.target_qps > best.target_qps else best
            if step == 0:
                break  # the service rate itself meets the bound
            low = qps
        else:
            high = qps
    if best is None:  # nothing passed: try the floor of the bracket before giving up
        run = trial(low)
        trials.append(run)
        best = run if run.passed(bound_ms) else min(trials, key=lambda t: t.target_qps)
    return trials, best


def _wait_until(deadline: float) -> None:
    # sleep is coarse (about 0.1 ms late or more); spin through the last two milliseconds
    while True:
        left = deadline - time.perf_counter()
        if left <= 0:
            return
        if left > 0.002:
            time.sleep(left - 0.002)


def _latency_result(subject: Subject, backend: str, batch: int, threads, scenario: str, blocks: list[Block],
                    budget: Budget) -> BenchResult:
    latencies = np.concatenate([b.latencies_ms for b in blocks])
    pooled = Latency.of(latencies)
    run_p50 = [float(np.percentile(b.latencies_ms, 50)) for b in blocks]
    return BenchResult(
        model=subject.model, backend=backend, device=subject.session(backend, threads).device, batch=batch,
        threads=threads, scenario=scenario, latency_ms=pooled, throughput_per_s=batch * 1000.0 / pooled.mean,
        iterations=len(latencies), warmup=budget.warmup, cov=pooled.cov, runs=len(blocks), run_p50_ms=run_p50,
        p50_ci95_ms=confidence_interval(run_p50), run_cov=run_spread(run_p50), cost=_cost(subject, batch, pooled.p50),
        run_throughput_per_s=[batch * len(b.latencies_ms) / b.seconds for b in blocks] if scenario == "offline" else [],
        latencies_ms=latencies,
    )


def _cost(subject: Subject, batch: int, p50_ms: float) -> Cost | None:
    cost = subject.cost(batch)
    return None if cost is None else result_cost(cost, p50_ms)


def _threads(count) -> str:
    return "default" if count is None else str(count)
