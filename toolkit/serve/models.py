"""The models a server holds: names from their files, sessions from `toolkit.runtime`, a batcher each."""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from toolkit import runtime
from toolkit.errors import DltkError
from toolkit.runtime.batch import shared_batch_dim
from toolkit.runtime.model_source import ModelSource
from toolkit.serve.batching import BatchPolicy, DynamicBatcher, Feeds

if TYPE_CHECKING:  # prometheus_client is the serve extra's; naming models must not need it
    from toolkit.serve.metrics import Metrics

# The platform names Triton and KServe use in model metadata.
PLATFORMS = {"ort": "onnxruntime_onnx", "tvm": "tvm_relax"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def parse_model_arg(arg: str) -> tuple[str, Path]:
    """`PATH` or `NAME=PATH` -> (name, path)."""
    name, sep, path = arg.partition("=")
    if sep and name and not Path(arg).exists():
        if not _NAME.match(name):
            raise DltkError(f"'{name}' is not a usable model name", "use letters, digits, '_', '.', '-'")
        return name, Path(path)
    return ModelSource.of(arg).name, Path(arg)


@dataclass
class LocalModel:
    """One model served in this process: a runtime session behind a dynamic batcher."""

    name: str
    session: runtime.Session
    policy: BatchPolicy
    metrics: Metrics
    _batcher: DynamicBatcher | None = field(default=None, init=False)

    def __post_init__(self):
        self.platform = PLATFORMS.get(self.session.backend, self.session.backend)
        self.inputs, self.outputs = self.session.inputs, self.session.outputs
        # A model with a fixed batch cannot stack requests: it runs each one as it comes.
        self.batch_dim = shared_batch_dim(self.inputs, self.outputs)
        if self.batch_dim and self.policy.max_batch_size > 1:
            self._batcher = DynamicBatcher(self.session.run, self.policy, self._observe)

    @property
    def batching(self) -> bool:
        return self._batcher is not None

    def _observe(self, queue_seconds: list[float], rows: int) -> None:
        self.metrics.batch(self.name, queue_seconds, rows)

    async def infer(self, feeds: Feeds) -> Feeds:
        if self._batcher is not None:
            return await self._batcher.submit(feeds)
        first = next(iter(feeds.values()))
        rows = int(first.shape[0]) if self.batch_dim else 1
        enqueued = time.perf_counter()

        def run() -> Feeds:  # queue time here is the wait for a free worker thread
            self._observe([time.perf_counter() - enqueued], rows)
            return self.session.run(feeds)

        return await asyncio.to_thread(run)

    async def close(self) -> None:
        if self._batcher is not None:
            await self._batcher.close()


def load_models(
    args: list[str], policy: BatchPolicy, metrics: Metrics, device: str = "cpu", backend: str | None = None,
    threads: int = 0,
) -> dict[str, LocalModel]:
    """Open each `PATH` or `NAME=PATH` with the runtime; names must be unique."""
    if not args:
        raise DltkError("no model to serve", "give one or more ONNX files or artifact directories")
    models: dict[str, LocalModel] = {}
    for arg in args:
        name, path = parse_model_arg(arg)
        if name in models:
            raise DltkError(f"two models are named '{name}'", f"rename one with NAME={path}")
        if not _NAME.match(name):
            raise DltkError(f"'{name}' (from {path}) is not a usable model name", f"rename it with NAME={path}")
        models[name] = LocalModel(name, runtime.load(path, device=device, backend=backend, threads=threads), policy, metrics)
    return models
