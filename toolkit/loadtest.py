"""A load generator for v2 servers (`dltk loadtest URL`), and the same load on a runtime in process.

Two ways to load a server, after MLPerf LoadGen's scenarios:
  closed loop   N clients, each sending its next request when the last one is answered
  Poisson       requests arrive at a target rate with exponential gaps, whether or not earlier
                ones were answered; latency counts from the scheduled arrival, so a server that
                falls behind shows it in its p99 (no coordinated omission)
Reported: completed requests per second, latency percentiles of the successful ones, errors.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from toolkit.errors import DltkError
from toolkit.runtime.batch import batch_dims
from toolkit.runtime.spec import random_feeds

WARMUP_SECONDS = 0.5


@dataclass
class LoadResult:
    scenario: str  # "closed-loop" or "poisson"
    target: str  # the URL, or "in-process"
    model: str
    batch: int  # rows per request
    concurrency: int | None
    rate_per_s: float | None
    seconds: float
    requests: int
    errors: int
    qps: float
    latency_ms: dict = field(default_factory=dict)
    error_kinds: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        load = f"{self.concurrency} clients" if self.scenario == "closed-loop" else f"{self.rate_per_s:g}/s offered"
        lat = self.latency_ms
        return (f"{self.model} batch {self.batch}, {self.scenario} ({load}): {self.qps:,.1f} requests/s, "
                f"p50 {lat.get('p50', float('nan')):.2f} ms, p99 {lat.get('p99', float('nan')):.2f} ms, "
                f"{self.errors} errors of {self.requests}")


class _Tally:
    def __init__(self):
        self.latencies: list[float] = []
        self.errors: dict[str, int] = {}
        self.lock = threading.Lock()

    def ok(self, seconds: float) -> None:
        with self.lock:
            self.latencies.append(seconds)

    def failed(self, kind: str) -> None:
        with self.lock:
            self.errors[kind] = self.errors.get(kind, 0) + 1

    def result(self, seconds: float, **how) -> LoadResult:
        ms = np.asarray(self.latencies) * 1e3
        latency = {}
        if ms.size:
            latency = {"mean": float(ms.mean()), "p50": float(np.percentile(ms, 50)), "p90": float(np.percentile(ms, 90)),
                       "p99": float(np.percentile(ms, 99)), "max": float(ms.max())}
        errors = sum(self.errors.values())
        return LoadResult(seconds=seconds, requests=ms.size + errors, errors=errors, qps=ms.size / seconds,
                          latency_ms=latency, error_kinds=dict(self.errors), **how)


def request_body(metadata: dict, batch: int, seed: int = 0) -> bytes:
    """A v2 request with random data shaped from the model's metadata (-1 dims: `batch` first, else 1)."""
    from toolkit.serve.protocol import DATATYPES

    rng = np.random.default_rng(seed)
    inputs = []
    for tensor in metadata["inputs"]:
        shape = [(batch if i == 0 else 1) if d == -1 else d for i, d in enumerate(tensor["shape"])]
        dtype = np.dtype(DATATYPES[tensor["datatype"]])
        values = rng.standard_normal(shape) if dtype.kind == "f" else rng.integers(0, 2, shape)
        inputs.append({"name": tensor["name"], "shape": shape, "datatype": tensor["datatype"],
                       "data": values.astype(dtype).reshape(-1).tolist()})
    return json.dumps({"inputs": inputs}).encode()


def load_server(url: str, model: str | None = None, concurrency: int = 8, rate: float | None = None,
                duration: float = 5.0, batch: int = 1, timeout: float = 30.0, seed: int = 0) -> LoadResult:
    """Drive a v2 server: closed loop with `concurrency` clients, or Poisson arrivals at `rate` per second."""
    if duration <= 0 or batch < 1 or concurrency < 1 or (rate is not None and rate <= 0):
        raise DltkError("duration, batch, concurrency and rate must be positive")
    return asyncio.run(_load(url.rstrip("/"), model, concurrency, rate, duration, batch, timeout, seed))


async def _load(url, model, concurrency, rate, duration, batch, timeout, seed) -> LoadResult:
    # aiohttp rather than httpx: on 2 cores httpx's async client topped out near 150 requests/s
    # on a route that does nothing, aiohttp near 1,700; the load generator must not be the limit.
    import aiohttp

    connections = concurrency if rate is None else 256
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        model = model or await _only_model(session, url)
        metadata = await _get_json(session, f"{url}/v2/models/{model}")
        body = request_body(metadata, batch, seed)
        infer_url = f"{url}/v2/models/{model}/infer"
        how = dict(target=url, model=model, batch=batch)
        if rate is None:
            return await _closed_loop(session, infer_url, body, concurrency, duration, how)
        return await _poisson(session, infer_url, body, rate, duration, seed, how)


async def _get_json(session, url: str, method: str = "GET"):
    import aiohttp

    try:
        async with session.request(method, url) as response:
            text = await response.text()
            if response.status != 200:
                raise DltkError(f"{url} answered {response.status}: {text[:200]}", "check the URL and --model")
            return json.loads(text)
    except (aiohttp.ClientError, asyncio.TimeoutError) as e:
        raise DltkError(f"cannot reach {url}: {e or type(e).__name__}", "is the server running? start one with 'dltk serve'") from None


async def _only_model(session, url: str) -> str:
    """The one model in the server's repository index (Triton's model repository extension)."""
    import aiohttp

    try:
        async with session.post(f"{url}/v2/repository/index") as response:
            index = await response.json(content_type=None) if response.status == 200 else []
    except (aiohttp.ClientConnectionError, asyncio.TimeoutError) as e:
        raise DltkError(f"cannot reach {url}: {e or type(e).__name__}", "is the server running? start one with 'dltk serve'") from None
    except (aiohttp.ClientError, ValueError):
        index = []
    names = [entry.get("name") for entry in index if isinstance(entry, dict)] if isinstance(index, list) else []
    if len(names) != 1:
        raise DltkError(f"cannot tell which model to load at {url} (its index lists {names or 'none'})", "pass --model NAME")
    return names[0]


async def _send(session, url: str, body: bytes, tally: _Tally | None, started: float) -> None:
    import aiohttp

    try:
        async with session.post(url, data=body, headers={"content-type": "application/json"}) as response:
            await response.read()
            status = response.status
    except (aiohttp.ClientError, asyncio.TimeoutError) as e:
        if tally:
            tally.failed(type(e).__name__)
        return
    if tally is None:
        return
    if status == 200:
        tally.ok(time.perf_counter() - started)
    else:
        tally.failed(f"HTTP {status}")


async def _closed_loop(session, url, body, concurrency, duration, how) -> LoadResult:
    tally = _Tally()
    warm_until = time.perf_counter() + WARMUP_SECONDS
    while time.perf_counter() < warm_until:
        await asyncio.gather(*(_send(session, url, body, None, 0.0) for _ in range(concurrency)))

    async def one_client(until: float):
        while time.perf_counter() < until:
            await _send(session, url, body, tally, time.perf_counter())

    start = time.perf_counter()
    await asyncio.gather(*(one_client(start + duration) for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    return tally.result(elapsed, scenario="closed-loop", concurrency=concurrency, rate_per_s=None, **how)


async def _poisson(session, url, body, rate, duration, seed, how) -> LoadResult:
    tally = _Tally()
    gaps = np.random.default_rng(seed).exponential(1.0 / rate, size=int(rate * duration * 2) + 16)
    arrivals = np.cumsum(gaps)
    arrivals = arrivals[arrivals < duration]
    for _ in range(8):
        await _send(session, url, body, None, 0.0)
    start = time.perf_counter()
    tasks = []
    for arrival in arrivals:
        delay = start + arrival - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(_send(session, url, body, tally, start + arrival)))
    await asyncio.gather(*tasks)
    elapsed = max(time.perf_counter() - start, duration)
    return tally.result(elapsed, scenario="poisson", concurrency=None, rate_per_s=rate, **how)


def load_in_process(session, model: str, concurrency: int = 1, duration: float = 5.0, batch: int = 1, seed: int = 0) -> LoadResult:
    """The closed-loop load on a runtime session called directly from `concurrency` threads: the baseline."""
    feeds = random_feeds(session.inputs, batch_dims(session.inputs, batch), seed)
    tally = _Tally()
    warm_until = time.perf_counter() + WARMUP_SECONDS
    while time.perf_counter() < warm_until:
        session.run(feeds)

    def one_client(until: float):
        while time.perf_counter() < until:
            started = time.perf_counter()
            try:
                session.run(feeds)
            except Exception as e:
                tally.failed(type(e).__name__)
            else:
                tally.ok(time.perf_counter() - started)

    start = time.perf_counter()
    threads = [threading.Thread(target=one_client, args=(start + duration,)) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return tally.result(time.perf_counter() - start, scenario="closed-loop", target="in-process", model=model, batch=batch,
                        concurrency=concurrency, rate_per_s=None)
