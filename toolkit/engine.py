"""Engine choice at compile time: measure the artifact's candidate engines, record the fastest.

The candidates run the same artifact: its TVM-compiled code and ONNX Runtime on its model.onnx
(with the provider for the target's device). Each is timed at the batch sizes that matter
(the static variants, or 1 and 8 for a dynamic batch) in blocks, two rounds each, because
ONNX Runtime's spinning threads slow whatever runs right after them. The engine with the
lowest geometric mean p50 is chosen; `toolkit.runtime.load` uses it unless told a backend.
This is a safety net: `dltk bench --backend tvm` always measures the TVM code itself.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np

from toolkit.runtime.batch import batch_dims, fixed_batch
from toolkit.runtime.spec import TensorSpec, random_feeds
from toolkit.timing import Budget, measure

ROUNDS = 2
BUDGET = Budget(warmup=5, min_iterations=30, min_seconds=0.15, max_seconds=3.0, repeats=1)


def measure_engines(sessions: dict, batches: list[int], log=lambda line: None, static_dims: dict | None = None) -> dict:
    """{"p50_ms": {engine: {batch: ms}}, "chosen": engine, ...} for sessions on the same model.

    static_dims: sizes of other symbolic dims to measure at (e.g. the sequence length tuned for)."""
    specs = next(iter(sessions.values())).inputs
    latencies: dict[str, dict[int, list[float]]] = {name: {b: [] for b in batches} for name in sessions}
    for batch in batches:
        feeds = random_feeds(specs, {**(static_dims or {}), **batch_dims(specs, batch)})
        for _ in range(ROUNDS):
            for name, session in sessions.items():
                latencies[name][batch] += measure(functools.partial(session.run, feeds), BUDGET)
    p50 = {name: {str(b): float(np.median(v)) for b, v in per_batch.items()} for name, per_batch in latencies.items()}
    score = {name: math.exp(np.mean([math.log(ms) for ms in per_batch.values()])) for name, per_batch in p50.items()}
    chosen = min(score, key=score.get)
    log("engine choice: " + ", ".join(
        f"{name} " + "/".join(f"{ms:.3f}" for ms in p50[name].values()) + " ms" for name in sessions
    ) + f" at batch {'/'.join(map(str, batches))}; chose {chosen}")
    return {
        "p50_ms": p50,
        "batches": batches,
        "rule": "lowest geometric mean of p50 over the batches",
        "chosen": chosen,
    }


def candidates(directory: Path, inputs: list[TensorSpec], outputs: list[TensorSpec], device: str,
               variants: dict[int, str], static_dims: dict | None = None) -> dict:
    """The engines that can run this artifact here: tvm always, ort when its provider is present."""
    from toolkit.errors import DltkError
    from toolkit.runtime.artifact import LIBRARY, SOURCE_ONNX
    from toolkit.runtime.tvm import TvmSession

    sessions = {"tvm": TvmSession(directory / LIBRARY, inputs, outputs, device, variants, static_dims)}
    try:
        from toolkit.runtime.ort import OrtSession

        sessions["ort"] = OrtSession(directory / SOURCE_ONNX, device)
    except DltkError:  # no ONNX Runtime provider for this device: TVM is the only engine
        pass
    return sessions


def batches_to_measure(inputs: list[TensorSpec], variants: dict[int, str]) -> list[int]:
    fixed = fixed_batch(inputs)
    if fixed is not None:
        return [fixed]
    return sorted(variants) or [1, 8]
