"""The plots of a run: every model's p50 over ONNX Runtime's in one picture (`write_ratio_plot`),
and per model, p50 latency against batch per backend and the latency distribution (`write_plot`).

Needs the `plot` extra (matplotlib); drawn with the Agg backend, so no display is needed.
"""

from __future__ import annotations

import numpy as np

from toolkit.bench.results import BenchResult
from toolkit.bench.runner import BenchRun
from toolkit.errors import DltkError
from toolkit.files import open_atomically

LATENCY_PLOTTED = ("single-stream", "multi-stream")


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise DltkError("--plot needs matplotlib", "pip install 'dltk[plot]'") from None
    return plt


def write_ratio_plot(results: list[BenchResult], path, title: str, baseline: str = "ort") -> None:
    """One picture of a run: per model, each backend's p50 over the baseline's at each batch, on a
    log axis with 1.0 (as fast as the baseline) marked; single-stream fp32 at default threads."""
    from toolkit.bench.runner import ratio_to

    plt = _pyplot()
    ratios = ratio_to([r for r in results if r.precision in (None, "fp32")], baseline)
    series = sorted({(backend, batch) for _, backend, batch in ratios if backend != baseline})
    if not series:
        raise DltkError(f"nothing to plot: no backend measured beside {baseline}", f"add another backend to --backend {baseline}")
    models = list(dict.fromkeys(model for model, _, _ in ratios))
    backends = list(dict.fromkeys(backend for backend, _ in series))
    batches = sorted({batch for _, batch in series})
    markers = dict(zip(batches, "os^Dv<>"))
    fig, ax = plt.subplots(figsize=(8, 0.42 * len(models) + 1.6))
    step = 0.7 / max(len(series), 1)  # each series sits at its own offset within the model's row
    for i, (backend, batch) in enumerate(series):
        rows = [(y, ratios[(m, backend, batch)]) for y, m in enumerate(models) if (m, backend, batch) in ratios]
        ax.scatter([r for _, r in rows], [y - 0.35 + step * (i + 0.5) for y, _ in rows], marker=markers[batch],
                   color=f"C{backends.index(backend)}", s=28, label=f"{backend} b{batch}", zorder=3)
    ax.axvline(1.0, color="black", linewidth=1.2, zorder=2)
    ax.text(1.0, -0.75, f" {baseline} = 1x", fontsize=8)
    ax.set_xscale("log")
    low, high = min(min(ratios.values()), 1.0), max(max(ratios.values()), 1.0)
    ticks = [t for t in (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500) if low / 2 <= t <= high * 2]
    ax.set_xticks(ticks, [f"{t:g}x" for t in ticks])
    ax.minorticks_off()
    ax.set_yticks(range(len(models)), models)
    ax.set_ylim(len(models) - 0.5, -1.0)
    ax.set_xlabel(f"p50 latency / {baseline} p50 (log scale; left of the line is faster than {baseline})")
    ax.grid(True, axis="x", which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right", ncol=len(batches))
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    with open_atomically(path) as f:
        fig.savefig(f, dpi=110, format="png")
    plt.close(fig)


def write_plot(run: BenchRun, path) -> None:
    plt = _pyplot()
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
