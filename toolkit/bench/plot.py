"""The plot of a run: per model, p50 latency against batch per backend, and the latency distribution.

Needs the `plot` extra (matplotlib); drawn with the Agg backend, so no display is needed.
"""

from __future__ import annotations

import numpy as np

from toolkit.bench.results import BenchResult
from toolkit.bench.runner import BenchRun
from toolkit.errors import DltkError
from toolkit.files import open_atomically

LATENCY_PLOTTED = ("single-stream", "multi-stream")


def write_plot(run: BenchRun, path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise DltkError("--plot needs matplotlib", "pip install 'dltk[plot]'") from None
    measured = [m for m in run.results if m.scenario in LATENCY_PLOTTED]
    if not measured:
        raise DltkError("nothing to plot: --plot draws the single-stream or multi-stream latencies",
                        "add --scenario single-stream")
    models = list(dict.fromkeys(m.model for m in measured))
    fig, axes = plt.subplots(len(models), 2, figsize=(12, 4.2 * len(models)), squeeze=False)
    colours = {}
    for (left, right), model in zip(axes, models):
        rows = [m for m in measured if m.model == model]
        _latency_vs_batch(left, rows, colours, model)
        _distribution(right, rows, colours, model)
    env = run.env
    fig.suptitle(f"dltk bench on {env['cpu']} ({env['cores']} cores)", fontsize=11)
    fig.tight_layout()
    with open_atomically(path) as f:
        fig.savefig(f, dpi=110, format="png")
    plt.close(fig)


def _series_label(row: BenchResult) -> str:
    threads = row.threads
    if threads is None:
        return row.backend
    return f"{row.backend} ({threads} thread{'s' if threads > 1 else ''})"


def _colour(colours: dict, label: str):
    if label not in colours:
        colours[label] = f"C{len(colours) % 10}"
    return colours[label]


def _latency_vs_batch(ax, rows, colours, model: str) -> None:
    for label in dict.fromkeys(_series_label(m) for m in rows):
        series = sorted((m for m in rows if _series_label(m) == label), key=lambda r: r.batch)
        batches = [r.batch for r in series]
        p50 = [r.latency_ms.p50 for r in series]
        p99 = [r.latency_ms.p99 for r in series]
        colour = _colour(colours, label)
        ax.plot(batches, p50, marker="o", color=colour, label=f"{label}: p50 (solid), p99 (dashed)")
        ax.plot(batches, p99, linestyle="--", linewidth=1, marker=".", color=colour)
    batches = sorted({m.batch for m in rows})
    ax.set_xscale("log", base=2)
    ax.set_xticks(batches, [str(b) for b in batches])
    ax.minorticks_off()
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("latency per call, ms")
    ax.set_title(f"{model}: latency against batch")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)


def _distribution(ax, rows, colours, model: str) -> None:
    batch = min(m.batch for m in rows)
    chosen = [m for m in rows if m.batch == batch]
    values = np.concatenate([m.latencies_ms for m in chosen])
    low, high = max(values.min(), 1e-4), values.max()
    bins = np.geomspace(low, high * 1.0001, 60) if high > low else 10
    for m in chosen:
        label = _series_label(m)
        share = np.full(len(m.latencies_ms), 1.0 / len(m.latencies_ms))  # runs of different lengths compare
        ax.hist(m.latencies_ms, bins=bins, weights=share, histtype="step", linewidth=1.5, color=_colour(colours, label),
                label=f"{label}: p50 {m.latency_ms.p50:.3f}, p99 {m.latency_ms.p99:.3f} ms")
    ax.set_xscale("log")
    ax.set_xlabel("latency per call, ms")
    ax.set_ylabel("share of calls")
    ax.set_title(f"{model}: latency distribution at batch {batch}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
