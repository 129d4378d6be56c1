"""The zoo benchmark: every model in models.REGISTRY, one run, written to benchmarks/results/<machine>/.

    dltk bench --zoo            (or: make bench)

writes bench.json (the schema's), bench.csv, RESULTS.md (the README's table), ratios.png (every
model's p50 over ONNX Runtime's in one picture) and latency.png (per model).
Files are rendered into a temporary directory first, then moved in; other files there stay.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from toolkit.bench.machine import machine_slug
from toolkit.bench.output import markdown, to_csv_text, to_json_text
from toolkit.bench.plot import LATENCY_PLOTTED
from toolkit.bench.runner import BenchRun, Plan, run_benchmark
from toolkit.files import write_atomically

RESULTS_ROOT = Path("benchmarks") / "results"


def zoo_names() -> list[str]:
    import models

    return list(models.REGISTRY)


def run_zoo(plan: Plan, output: Path | None = None, note: str = "", log=lambda line: None) -> tuple[BenchRun, Path]:
    run = run_benchmark(zoo_names(), plan, log)
    output = Path(output) if output else RESULTS_ROOT / machine_slug(run.env)
    write_results(run, output, note)
    return run, output


def ratio_title(env: dict) -> str:
    return f"p50 over ONNX Runtime's, single-stream: {env['cpu']}, {env['cores']} cores"


def write_results(run: BenchRun, output: Path, note: str = "") -> None:
    """Write the run's files into `output`, leaving other files there (other benchmarks' results) alone.

    Every file is rendered first into a temporary directory, then moved into place, so an error
    (say, matplotlib missing) leaves the earlier results untouched.
    """
    output.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".bench.", dir=output) as tmp:
        staged = Path(tmp)
        write_atomically(staged / "bench.json", to_json_text(run))
        write_atomically(staged / "bench.csv", to_csv_text(run))
        write_atomically(staged / "RESULTS.md", markdown(run, note))
        if any(r.scenario in LATENCY_PLOTTED for r in run.results):
            from toolkit.bench.plot import write_plot, write_ratio_plot  # matplotlib

            write_plot(run, staged / "latency.png")
            if "ort" in run.plan.backends and len(run.plan.backends) > 1:
                write_ratio_plot(run.results, staged / "ratios.png", ratio_title(run.env))
        for file in sorted(staged.iterdir()):
            file.chmod(0o644)
            os.replace(file, output / file.name)
