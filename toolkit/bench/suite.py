"""The zoo benchmark: every model in models.REGISTRY, one run, written to benchmarks/results/<machine>/.

    dltk bench --zoo            (or: make bench)

writes bench.json (the schema's), bench.csv, RESULTS.md (the README's table) and latency.png.
The directory is written whole: files go to a temporary directory renamed into place.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from toolkit.bench.environment import machine_slug
from toolkit.bench.output import markdown, to_csv_text, to_json_text, write_text
from toolkit.bench.runner import BenchRun, Plan, run_benchmark

RESULTS_ROOT = Path("benchmarks") / "results"


def zoo_names() -> list[str]:
    import models

    return list(models.REGISTRY)


def run_zoo(plan: Plan, output: Path | None = None, note: str = "", log=lambda line: None) -> tuple[BenchRun, Path]:
    run = run_benchmark(zoo_names(), plan, log)
    output = Path(output) if output else RESULTS_ROOT / machine_slug(run.env)
    write_results(run, output, note)
    return run, output


def write_results(run: BenchRun, output: Path, note: str = "") -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        write_text(tmp / "bench.json", to_json_text(run))
        write_text(tmp / "bench.csv", to_csv_text(run))
        write_text(tmp / "RESULTS.md", markdown(run, note))
        if any(r["scenario"] in ("single-stream", "multi-stream") for r in run.results):
            from toolkit.bench.plot import write_plot

            write_plot(run, tmp / "latency.png")
        tmp.chmod(0o755)
        if output.exists():
            old = output.with_name(f".{output.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            output.rename(old)
            tmp.rename(output)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(output)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
