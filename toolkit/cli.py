"""`dltk`: a thin click layer over the library. Commands parse, call one function, print.

Exit codes: 0 success, 1 the work ran and failed (CheckFailed), 2 bad usage or input (DltkError).
Errors print as one line, `error: <what> (<how to fix>)`; -v adds debug logs and the traceback.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import time
import traceback
from pathlib import Path

import click

from toolkit.errors import DltkError

_verbose = False


def _set_verbose(ctx, param, value):
    global _verbose
    if value:
        _verbose = True
        logging.basicConfig(level=logging.DEBUG, format="%(name)s: %(message)s")
    return value


verbose_option = click.option(
    "-v", "--verbose", is_flag=True, expose_value=False, is_eager=True, callback=_set_verbose,
    help="Debug logs, and the traceback on errors.",
)


def progress(line: str) -> None:
    click.echo(line, err=True)


def console():
    from rich.console import Console

    return Console(width=shutil.get_terminal_size((120, 24)).columns, highlight=False)


class DltkGroup(click.Group):
    """Turns every failure into one `error:` line and the documented exit code."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        global _verbose
        _verbose = False
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
            code = code if isinstance(code, int) else 0
        except click.ClickException as e:  # bad usage: unknown option, missing argument, ...
            click.echo(f"error: {e.format_message()} (see 'dltk --help')", err=True)
            code = e.exit_code
        except click.Abort:
            click.echo("error: aborted", err=True)
            code = 1
        except DltkError as e:
            if _verbose:
                traceback.print_exc()
            click.echo(f"error: {e}", err=True)
            code = e.exit_code
        except Exception as e:  # a bug in dltk or a library under it
            if _verbose:
                traceback.print_exc()
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            click.echo(f"error: {type(e).__name__}: {first} (rerun with -v for the traceback)", err=True)
            code = 1
        if standalone_mode:
            sys.exit(code)
        return code


@click.group(cls=DltkGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dltk")
@verbose_option
def cli():
    """Train in PyTorch, export to ONNX, compile with TVM, run and benchmark with one runtime."""


def main(argv=None, prog_name="dltk"):
    cli.main(args=argv, prog_name=prog_name)


def _echo_json(data) -> None:
    click.echo(json.dumps(data, indent=2))


# --- commands -------------------------------------------------------------------------------


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@verbose_option
def models(as_json):
    """List the model zoo."""
    import models as zoo

    rows = [
        {"name": s.name, "family": s.family, "parameters": s.parameters(), "dataset": s.dataset,
         "metric": s.metric, "teaches": s.teaches}
        for s in zoo.REGISTRY.values()
    ]
    if as_json:
        return _echo_json(rows)
    from rich.table import Table

    table = Table("name", "family", "params", "dataset", "teaches", box=None)
    for r in rows:
        table.add_row(r["name"], r["family"], f"{r['parameters']:,}", r["dataset"], r["teaches"])
    console().print(table)


@cli.command()
@click.argument("name")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Checkpoint to write [default: NAME.pt].")
@click.option("--epochs", type=int, help="Epochs [default: the model's recipe].")
@click.option("--optimizer", type=click.Choice(["sgd", "momentum", "adagrad", "adam"]), help="[default: the recipe's]")
@click.option("--seed", type=int, default=0, show_default=True)
@verbose_option
def train(name, output, epochs, optimizer, seed):
    """Train a zoo model on its data and save its weights."""
    from toolkit.train import train_model

    output = output or f"{name}.pt"
    result = train_model(name, output, epochs=epochs, optimizer=optimizer, seed=seed, log=progress)
    click.echo(f"{name}: held-out {result.metric} {result.value:.4f} after {result.epochs} epochs "
               f"({result.seconds:.1f} s); wrote {output}")


@cli.command()
@click.argument("source", metavar="NAME|CKPT")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="ONNX file to write.")
@click.option("--opset", type=int, default=18, show_default=True)
@click.option("--batch", type=int, help="Fix the batch size [default: a dynamic batch axis].")
@click.option("--atol", type=float, default=1e-4, show_default=True, help="Parity tolerance, absolute.")
@click.option("--rtol", type=float, default=1e-3, show_default=True, help="Parity tolerance, relative.")
@verbose_option
def export(source, output, opset, batch, atol, rtol):
    """Export a zoo model or checkpoint to ONNX, checked against PyTorch."""
    from toolkit.export import export_model

    progress(f"exporting {source}")
    report = export_model(source, output, opset=opset, batch=batch, atol=atol, rtol=rtol)
    click.echo(f"wrote {report.path} (opset {report.opset}; {report.parity.summary()})")


@cli.command()
@click.argument("path", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@verbose_option
def inspect(path, as_json):
    """Show an ONNX model's or artifact's inputs, outputs, ops, parameters, FLOPs and backend support."""
    from toolkit.inspect import inspect_path

    info = inspect_path(path)
    if as_json:
        return _echo_json(info)
    from rich.markup import escape

    out = console()
    out.print(f"[bold]{escape(str(path))}[/bold]  producer {info['producer']}, opset {info['opset']}")
    for kind in ("inputs", "outputs"):
        for t in info[kind]:
            shape = ", ".join(map(str, t["shape"]))
            out.print(escape(f"  {kind[:-1]:6} {t['name']}: {t['dtype']}[{shape}]"))
    out.print(f"  parameters {info['parameters']:,}   FLOPs at batch 1 {info['flops_batch1']:,}")
    from rich.table import Table

    table = Table("op", "count", "ort", "tvm", box=None)
    for op in info["ops"]:
        table.add_row(op["op"], str(op["count"]), "yes" if op["ort"] else "NO", "yes" if op["tvm"] else "NO")
    out.print(table)
    if "artifact" in info:
        a = info["artifact"]
        out.print(escape(f"  artifact: target {json.dumps(a['target'])}, device {a['device']}, "
                  f"verification {json.dumps(a['verification'])}"))
        out.print(escape(f"  tuning: {json.dumps(a.get('tuning'))}; static-batch variants {json.dumps(a.get('variants') or {})}"))
        out.print(escape(f"  engine: {_engine_line(a.get('engine'))}"))


def _engine_line(engine: dict | None) -> str:
    if not engine:
        return "tvm (artifact from before engine choice)"
    if "p50_ms" not in engine:
        return f"{engine['chosen']} ({engine.get('reason', '')})"
    measured = ", ".join(
        f"{name} " + " / ".join(f"b{b} {ms:.3f}" for b, ms in per_batch.items()) + " ms"
        for name, per_batch in engine["p50_ms"].items()
    )
    return f"{engine['chosen']} runs by default (p50 measured at compile: {measured})"


@cli.command()
@click.argument("model", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Artifact directory to write.")
@click.option("--target", default="cpu", show_default=True, help="cpu, cuda, or a TVM target as JSON.")
@click.option("--tune", "tune_now", is_flag=True, help="Tune the kernels with MetaSchedule (records saved in --db).")
@click.option("--trials", type=click.IntRange(min=1), default=64, show_default=True, help="Measured candidates in all, counting records already in the database.")
@click.option("--time-budget", help="Stop tuning after this long, e.g. 90s, 10m (rerun to continue).")
@click.option("--db", type=click.Path(file_okay=False), help="Tuning database directory [default: the dltk cache]; its records are applied even without --tune.")
@click.option("--tune-batch", "tune_batches", default="1,8", show_default=True, callback=lambda c, p, v: _int_list(c, p, v), help="Batch sizes that get tuned static variants (dynamic-batch models).")
@click.option("--rpc-tracker", metavar="HOST:PORT", help="Measure tuning candidates on a remote device through a TVM RPC tracker.")
@click.option("--rpc-key", help="The device key registered with the RPC tracker.")
@click.option("--no-shipped-records", is_flag=True, help="Do not apply the tuning records shipped with dltk (benchmarks/tuning/).")
@click.option("--no-engine-choice", is_flag=True, help="Do not measure ONNX Runtime against TVM; the artifact runs TVM.")
@click.option("--atol", type=float, default=1e-4, show_default=True, help="Verification tolerance, absolute.")
@click.option("--rtol", type=float, default=1e-3, show_default=True, help="Verification tolerance, relative.")
@verbose_option
def compile(model, output, target, tune_now, trials, time_budget, db, tune_batches, rpc_tracker, rpc_key,
            no_shipped_records, no_engine_choice, atol, rtol):
    """Compile an ONNX model with TVM into a verified artifact directory."""
    from toolkit.compile import compile_model
    from toolkit.tune import tune_options

    tuning = tune_options(trials if tune_now else 0, time_budget, db, tune_batches, rpc_tracker, rpc_key,
                          shipped=not no_shipped_records)
    report = compile_model(model, output, target=target, atol=atol, rtol=rtol, tuning=tuning,
                           choose_engine=not no_engine_choice, log=progress)
    manifest = report.artifact.manifest
    checks = "; ".join(c.summary() for c in report.verification) or manifest["verification"]["reason"]
    tuned = manifest.get("tuning")
    summary = f"tuned batches {tuned['static_batches']}, " if tuned else ""
    click.echo(f"wrote {report.artifact.path} in {report.seconds:.1f} s ({summary}engine {manifest['engine']['chosen']}; {checks})")


@cli.command()
@click.argument("path", type=click.Path())
@click.option("--backend", type=click.Choice(["ort", "tvm"]), help="[default: tvm for artifacts, ort for ONNX]")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--input", "inputs", multiple=True, metavar="NAME=FILE.npy", help="An input from a .npy file; random when absent.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the outputs to an .npz file.")
@click.option("--json", "as_json", is_flag=True, help="Print the outputs as JSON.")
@verbose_option
def run(path, backend, device, inputs, output, as_json):
    """Run an ONNX file or an artifact once."""
    from toolkit import runtime
    from toolkit.runner import read_feeds, save_outputs

    session = runtime.load(path, device=device, backend=backend)
    feeds = read_feeds(session.inputs, inputs)
    start = time.perf_counter()
    outputs = session.run(feeds)
    elapsed_ms = (time.perf_counter() - start) * 1e3
    if output:
        save_outputs(output, outputs)
    if as_json:
        return _echo_json({
            "backend": session.backend, "device": session.device, "latency_ms": elapsed_ms,
            "outputs": [{"name": n, "shape": list(v.shape), "dtype": str(v.dtype), "data": v.tolist()} for n, v in outputs.items()],
        })
    for name, value in outputs.items():
        preview = " ".join(f"{x:.4g}" for x in value.reshape(-1)[:8])
        click.echo(f"{name}: {value.dtype}{list(value.shape)}  [{preview}{' ...' if value.size > 8 else ''}]")
    click.echo(f"{session.backend} on {session.device}: {elapsed_ms:.3f} ms" + (f"; wrote {output}" if output else ""))


def _int_list(ctx, param, value):
    try:
        numbers = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got '{value}'") from None
    if not numbers or min(numbers) < 1:
        raise click.BadParameter(f"expected positive integers, got '{value}'")
    return numbers


@cli.command()
@click.argument("source", metavar="NAME|CKPT|MODEL.onnx|ARTIFACT")
@click.option("--backend", "backends", default="torch,ort,tvm", show_default=True, help="Comma-separated: torch, ort, tvm.")
@click.option("--batch", "batches", default="1", show_default=True, callback=_int_list, help="Comma-separated batch sizes.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--scenario", type=click.Choice(["single-stream"]), default="single-stream", show_default=True)
@click.option("--min-iterations", type=int, default=200, show_default=True)
@click.option("--min-seconds", type=float, default=1.0, show_default=True)
@click.option("--warmup", type=int, default=20, show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write results as JSON ('-' for stdout).")
@click.option("--rpc-tracker", metavar="HOST:PORT", help="Run the tvm backend on a remote device through a TVM RPC tracker.")
@click.option("--rpc-key", help="The device key registered with the RPC tracker.")
@verbose_option
def bench(source, backends, batches, device, scenario, min_iterations, min_seconds, warmup, json_path, rpc_tracker, rpc_key):
    """Measure latency per backend and batch size, side by side in one run."""
    from toolkit import bench as benchmark
    from toolkit.tune import rpc_target

    subject = benchmark.open_subject(source, [b.strip() for b in backends.split(",") if b.strip()], device,
                                     log=progress, rpc=rpc_target(rpc_tracker, rpc_key))
    budget = benchmark.Budget(warmup=warmup, min_iterations=min_iterations, min_seconds=min_seconds)
    results = benchmark.single_stream(subject, batches, budget, log=progress)
    report = benchmark.report(results)
    for r in benchmark.noisy(results):
        progress(f"warning: {r['backend']} batch {r['batch']} varies a lot (CoV {r['cov']:.0%}); close other work and rerun")
    if json_path == "-":
        return _echo_json(report)
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(report, indent=2) + "\n")
    console().print(_bench_table(results, report["env"]))
    if json_path:
        click.echo(f"wrote {json_path}")


def _bench_table(results, env):
    from rich.table import Table

    from toolkit.bench import ratio_to

    ratios = ratio_to(results, "ort")
    table = Table(title=f"single-stream latency, ms ({env['cpu']}, {env['cores']} cores)", box=None)
    for column in ("model", "backend", "device", "batch", "p50", "p90", "p99", "mean", "samples/s", "p50 vs ort"):
        table.add_column(column, justify="left" if column in ("model", "backend", "device") else "right")
    for r in results:
        lat = r["latency_ms"]
        ratio = ratios.get((r["model"], r["backend"], r["batch"]))
        table.add_row(
            r["model"], r["backend"], r["device"], str(r["batch"]),
            f"{lat['p50']:.3f}", f"{lat['p90']:.3f}", f"{lat['p99']:.3f}", f"{lat['mean']:.3f}",
            f"{r['throughput_per_s']:,.0f}", f"{ratio:.2f}x" if ratio is not None else "",
        )
    return table


if __name__ == "__main__":
    main()
