"""Dynamic batching: concurrent requests for one model are gathered and run as one batch.

A batch closes when it holds `max_batch_size` rows or when its first request has waited
`max_delay_ms`, whichever comes first. Requests are stacked along the batch axis (a
symbolic leading dimension shared by every input) and the outputs are split back. Only
requests alike apart from that axis share a batch. One batch runs at a time, in a thread,
so the event loop keeps answering while the next batch gathers.
"""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

Feeds = dict[str, np.ndarray]


@dataclass(frozen=True)
class BatchPolicy:
    max_batch_size: int = 32  # rows per batch; 1 turns batching off
    max_delay_ms: float = 2.0  # how long the first request of a batch waits for others

    def __post_init__(self):
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {self.max_batch_size}")
        if self.max_delay_ms < 0:
            raise ValueError(f"max_delay_ms must not be negative, got {self.max_delay_ms}")


def concat(requests: list[Feeds]) -> Feeds:
    return {name: np.concatenate([r[name] for r in requests]) for name in requests[0]}


def split(outputs: Feeds, rows: list[int]) -> list[Feeds]:
    total = sum(rows)
    for name, value in outputs.items():
        if value.ndim == 0 or value.shape[0] != total:
            raise RuntimeError(f"output '{name}' has shape {value.shape}, not {total} rows: the model does not batch along axis 0")
    offsets = np.cumsum(rows)[:-1]
    parts = {name: np.split(value, offsets) for name, value in outputs.items()}
    return [{name: parts[name][i] for name in outputs} for i in range(len(rows))]


@dataclass
class _Request:
    feeds: Feeds
    rows: int
    alike: tuple  # dtypes and shapes past the batch axis: only alike requests share a batch
    future: asyncio.Future
    enqueued: float  # time.perf_counter(): uvloop's loop.time() counts whole milliseconds


class DynamicBatcher:
    """`await batcher.submit(feeds)` answers one request's outputs from a batched `run`.

    `observe(queue_seconds, batch_rows)` is told, for each batch, how long each request
    waited and how many rows ran; the server feeds its metrics from it.
    """

    def __init__(self, run: Callable[[Feeds], Feeds], policy: BatchPolicy, observe: Callable | None = None):
        self._run = run
        self.policy = policy
        self._observe = observe or (lambda queue_seconds, rows: None)
        self._queue: asyncio.Queue[_Request] | None = None
        self._held: collections.deque[_Request] = collections.deque()  # did not fit the last batch
        self._worker: asyncio.Task | None = None

    async def submit(self, feeds: Feeds) -> Feeds:
        loop = asyncio.get_running_loop()
        if self._worker is None:
            self._queue = asyncio.Queue()
            self._worker = loop.create_task(self._serve_batches())
        first = next(iter(feeds.values()))
        alike = tuple((name, v.dtype.str, v.shape[1:]) for name, v in sorted(feeds.items()))
        request = _Request(feeds, int(first.shape[0]), alike, loop.create_future(), time.perf_counter())
        self._queue.put_nowait(request)
        return await request.future

    async def close(self) -> None:
        """Stop the worker. The server calls it after requests in flight have been answered."""
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            self._worker = None
        waiting = list(self._held)
        while self._queue is not None and not self._queue.empty():
            waiting.append(self._queue.get_nowait())
        for request in waiting:
            if not request.future.done():
                request.future.set_exception(RuntimeError("the server is shutting down"))

    async def _serve_batches(self) -> None:
        while True:
            batch = await self._gather()
            await self._run_batch(batch)

    async def _gather(self) -> list[_Request]:
        limit = self.policy.max_batch_size
        first = self._held.popleft() if self._held else await self._queue.get()
        batch, rows = [first], first.rows
        for request in list(self._held):
            if rows + request.rows <= limit and request.alike == first.alike:
                self._held.remove(request)
                batch.append(request)
                rows += request.rows
        deadline = first.enqueued + self.policy.max_delay_ms / 1e3
        while rows < limit:
            remaining = deadline - time.perf_counter()
            try:
                if remaining > 0:
                    request = await asyncio.wait_for(self._queue.get(), remaining)
                else:  # past the deadline: take only what has queued up already
                    request = self._queue.get_nowait()
            except (asyncio.TimeoutError, asyncio.QueueEmpty):
                break
            if rows + request.rows <= limit and request.alike == first.alike:
                batch.append(request)
                rows += request.rows
            else:
                self._held.append(request)
                if remaining <= 0:
                    break
        return batch

    async def _run_batch(self, batch: list[_Request]) -> None:
        now = time.perf_counter()
        rows = [r.rows for r in batch]
        self._observe([now - r.enqueued for r in batch], sum(rows))
        try:
            if len(batch) == 1:
                results = [await asyncio.to_thread(self._run, batch[0].feeds)]
            else:
                merged = await asyncio.to_thread(self._run, concat([r.feeds for r in batch]))
                results = split(merged, rows)
        except Exception as error:
            if len(batch) == 1:
                if not batch[0].future.done():
                    batch[0].future.set_exception(error)
                return
            # One request may have made the whole batch fail (a value the model cannot take):
            # run each alone so that only the one at fault gets the error.
            for request in batch:
                await self._run_batch([request])
            return
        for request, result in zip(batch, results):
            if not request.future.done():  # the client may have gone away
                request.future.set_result(result)

