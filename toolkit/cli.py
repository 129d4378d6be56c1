"""`dltk`: a thin click layer over the library. Commands parse, call one function, print.

Exit codes: 0 success, 1 the work ran and failed (CheckFailed), 2 bad usage or input (DltkError).
Errors print as one line, `error: <what> (<how to fix>)`; -v adds debug logs and the traceback.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import re
import shutil
import sys
import time
import traceback

import click

from toolkit.errors import CheckFailed, DltkError, first_line
from toolkit.parity import ATOL, RTOL
from toolkit.serve.batching import BatchPolicy
from toolkit.target import DEVICES
from toolkit.timing import Budget
from toolkit.tune import DEFAULT_BATCHES


class Invocation:
    """One `dltk` call: whether -v was given, and the debug logging it turned on until the call ends."""

    def __init__(self):
        self.verbose = False
        self._handler: logging.Handler | None = None
        self._level = logging.WARNING

    def enable_debug_logs(self) -> None:
        if self._handler is None:
            root = logging.getLogger()
            self._handler, self._level = logging.StreamHandler(), root.level
            self._handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
            root.addHandler(self._handler)
            root.setLevel(logging.DEBUG)
        self.verbose = True

    def close(self) -> None:
        if self._handler is not None:
            root = logging.getLogger()
            root.removeHandler(self._handler)
            root.setLevel(self._level)
            self._handler = None


def _set_verbose(ctx, param, value):
    if value:
        ctx.ensure_object(Invocation).enable_debug_logs()
    return value


verbose_option = click.option(
    "-v", "--verbose", is_flag=True, expose_value=False, is_eager=True, callback=_set_verbose,
    help="Debug logs, and the traceback on errors.",
)


# --- options several commands share; defaults from the library -------------------------------------------------

device_option = click.option("--device", type=click.Choice(DEVICES), default=DEVICES[0], show_default=True)


def tolerance_options(what: str):
    """--atol and --rtol, defaulting to the fp32 tolerances of toolkit.parity."""
    def add(command):
        command = click.option("--rtol", type=float, default=RTOL, show_default=True, help=f"{what} tolerance, relative.")(command)
        return click.option("--atol", type=float, default=ATOL, show_default=True, help=f"{what} tolerance, absolute.")(command)
    return add


def rpc_options(tracker_help: str):
    """--rpc-tracker HOST:PORT and --rpc-key KEY (toolkit.rpc.rpc_target reads them)."""
    def add(command):
        command = click.option("--rpc-key", help="The device key registered with the RPC tracker.")(command)
        return click.option("--rpc-tracker", metavar="HOST:PORT", help=tracker_help)(command)
    return add


def progress(line: str) -> None:
    click.echo(line, err=True)


@contextlib.contextmanager
def epoch_bar(title: str):
    """A progress bar on stderr, advanced by each finished epoch; yields the on_epoch callback."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task(title, total=None)

        def on_epoch(epoch) -> None:
            bar.update(task, total=epoch.of, completed=epoch.number, description=f"{title}: {epoch}")

        yield on_epoch


def console():
    from rich.console import Console

    return Console(width=shutil.get_terminal_size((120, 24)).columns, highlight=False)


class DltkGroup(click.Group):
    """Turns every failure into one `error:` line and the documented exit code."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        invocation = extra.setdefault("obj", Invocation())
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
            if invocation.verbose:
                traceback.print_exc()
            click.echo(f"error: {_without_unsafe_advice(str(e))}", err=True)
            code = e.exit_code
        except Exception as e:  # a bug in dltk or a library under it
            if invocation.verbose:
                traceback.print_exc()
            package = _full_toolkit_package(e)
            if package:
                click.echo(f"error: this command needs {package}, which the runtime-only install leaves out "
                           "(pip install 'dltk[full]')", err=True)
                code = 2
            else:
                first = first_line(e) if str(e).strip() else ""
                click.echo(f"error: {type(e).__name__}: {_without_unsafe_advice(first)} (rerun with -v for the traceback)", err=True)
                code = 1
        finally:
            invocation.close()
        if standalone_mode:
            sys.exit(code)
        return code


# Libraries suggest turning their safe loaders off (numpy's allow_pickle, torch's weights_only=False),
# which would let a hostile file run code: such advice never reaches a user.
_UNSAFE_ADVICE = ("allow_pickle", "weights_only")


def _without_unsafe_advice(message: str) -> str:
    if not any(word in message for word in _UNSAFE_ADVICE):
        return message
    sentences = re.split(r"(?<=[.;])\s+", message)
    kept = list(itertools.takewhile(lambda s: not any(word in s for word in _UNSAFE_ADVICE), sentences))
    return " ".join(kept + ["The file holds Python objects, which dltk does not load (give a file of plain arrays or tensors)"])


# Top-level modules of the "full" extra's packages: `pip install dltk` (the runtime) leaves them out.
_FULL_TOOLKIT = {"torch", "onnx", "onnxscript", "onnxslim", "rich", "sklearn", "networkx"}


def _full_toolkit_package(error: Exception) -> str | None:
    if isinstance(error, ModuleNotFoundError) and error.name:
        package = error.name.split(".")[0]
        return package if package in _FULL_TOOLKIT else None
    return None


@click.group(cls=DltkGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dltk")
@verbose_option
def cli():
    """Train in PyTorch, export to ONNX, compile with TVM, run and benchmark with one runtime."""


def main(argv=None, prog_name="dltk"):
    cli.main(args=argv, prog_name=prog_name)


def _echo_json(data) -> None:
    click.echo(json.dumps(data, indent=2))


def _output_file(ctx, param, value):
    """An output file option, checked before any work: writable, not a directory, not inside an artifact."""
    from toolkit.files import check_output_file
    from toolkit.runtime.artifact import refuse_inside_artifact

    if value and value != "-":
        refuse_inside_artifact(value, "/".join(param.opts))  # first: the writability probe would touch it
        check_output_file(value, "/".join(param.opts))
    return value


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
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Checkpoint to write [default: NAME.pt].", callback=_output_file)
@click.option("--epochs", type=int, help="Epochs [default: the model's recipe].")
@click.option("--optimizer", type=click.Choice(["sgd", "momentum", "adagrad", "adam"]), help="[default: the recipe's]")
@click.option("--seed", type=int, default=0, show_default=True)
@verbose_option
def train(name, output, epochs, optimizer, seed):
    """Train a zoo model on its data and save its weights."""
    from toolkit.train import train_model

    output = output or f"{name}.pt"
    with epoch_bar(f"training {name}") as on_epoch:
        result = train_model(name, output, epochs=epochs, optimizer=optimizer, seed=seed, on_epoch=on_epoch)
    click.echo(f"{name}: held-out {result.metric} {result.value:.4f} after {result.epochs} epochs "
               f"({result.seconds:.1f} s); wrote {output}")


@cli.command()
@click.argument("source", metavar="NAME|CKPT")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="ONNX file to write.", callback=_output_file)
@click.option("--opset", type=int, default=18, show_default=True)
@click.option("--batch", type=int, help="Fix the batch size [default: a dynamic batch axis].")
@tolerance_options("Parity")
@verbose_option
def export(source, output, opset, batch, atol, rtol):
    """Export a zoo model or checkpoint to ONNX, checked against PyTorch."""
    from toolkit.export import export_model

    progress(f"exporting {source}")
    report = export_model(source, output, opset=opset, batch=batch, atol=atol, rtol=rtol)
    if not report.trained:
        progress(f"note: {source} has freshly initialised weights; 'dltk train {source}' first for a useful model")
    click.echo(f"wrote {report.path} (opset {report.opset}; {report.parity.summary()})")
    if report.decode:
        click.echo(f"wrote {report.decode} (the KV-cache decode step 'dltk generate' uses; compile it as well for TVM)")


@cli.command()
@click.argument("path", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--profile", is_flag=True, help="Time an artifact's TVM kernels and ONNX Runtime ops instead.")
@click.option("--batch", type=click.IntRange(min=1),
              help="Batch size to profile at [default: 1, or the model's fixed batch].")
@verbose_option
def inspect(path, as_json, profile, batch):
    """Show an ONNX model's or artifact's inputs, outputs, ops, parameters, FLOPs and backend support.

    With --profile, where a compiled artifact's time goes: per-kernel times in TVM and per-op
    times in ONNX Runtime, on random inputs.
    """
    if profile:
        return _print_profile(path, batch, as_json)
    if batch is not None:
        raise DltkError("--batch goes with --profile", "add --profile, or drop --batch")
    from toolkit.inspect import inspect_path, report_renderables

    info = inspect_path(path)
    if as_json:
        return _echo_json(info)
    for renderable in report_renderables(path, info):
        console().print(renderable)


def _print_profile(path, batch: int | None, as_json: bool) -> None:
    from toolkit.profile import profile_artifact, profile_renderables

    progress(f"profiling {path}")
    report = profile_artifact(path, batch)
    if as_json:
        return _echo_json(report)
    for renderable in profile_renderables(path, report):
        console().print(renderable)


@cli.command()
@click.argument("model", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Artifact directory to write.")
@click.option("--target", default="cpu", show_default=True, help="cpu, cuda, or a TVM target as JSON.")
@click.option("--tune", "tune_now", is_flag=True, help="Tune the kernels with MetaSchedule (records saved in --db).")
@click.option("--trials", type=click.IntRange(min=1), default=64, show_default=True,
              help="Measured candidates in all, counting records already in the database.")
@click.option("--time-budget", help="Stop tuning after this long, e.g. 90s, 10m (rerun to continue).")
@click.option("--db", type=click.Path(file_okay=False),
              help="Tuning database directory [default: the dltk cache]; its records are applied even without --tune.")
@click.option("--tune-batch", "tune_batches", default=",".join(map(str, DEFAULT_BATCHES)), show_default=True,
              callback=lambda c, p, v: _int_list(c, p, v),
              help="Batch sizes that get tuned static variants (dynamic-batch models).")
@rpc_options("Measure tuning candidates on a remote device through a TVM RPC tracker.")
@click.option("--no-shipped-records", is_flag=True, help="Do not apply the tuning records shipped with dltk (toolkit/shipped_records/).")
@click.option("--no-engine-choice", is_flag=True, help="Do not measure ONNX Runtime against TVM; the artifact runs TVM.")
@click.option("--dim", "dims", multiple=True, callback=lambda c, p, v: _dim_sizes(v), metavar="NAME=SIZE",
              help="Make a symbolic input dim static, e.g. --dim height=224 (repeatable).")
@tolerance_options("Verification")
@verbose_option
def compile(model, output, target, tune_now, trials, time_budget, db, tune_batches, rpc_tracker, rpc_key,
            no_shipped_records, no_engine_choice, dims, atol, rtol):
    """Compile an ONNX model with TVM into a verified artifact directory."""
    from toolkit.compile import compile_model
    from toolkit.tune import tune_options

    tuning = tune_options(trials if tune_now else 0, time_budget, db, tune_batches, rpc_tracker, rpc_key,
                          shipped=not no_shipped_records)
    report = compile_model(model, output, target=target, atol=atol, rtol=rtol, tuning=tuning,
                           choose_engine=not no_engine_choice, log=progress, dims=dims)
    manifest = report.artifact.manifest
    checks = "; ".join(c.summary() for c in report.verification) or manifest["verification"]["reason"]
    tuned = manifest.get("tuning")
    summary = f"tuned batches {tuned['static_batches']}, " if tuned else ""
    click.echo(f"wrote {report.artifact.path} in {report.seconds:.1f} s ({summary}engine {manifest['engine']['chosen']}; {checks})")


@cli.command()
@click.argument("model", type=click.Path(), metavar="MODEL.onnx")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Reduced ONNX file to write.")
@click.option("--mode", type=click.Choice(["auto", "dynamic", "static", "fp16", "bf16"]), default="auto", show_default=True,
              help="int8 with activations quantized at run time, int8 QDQ calibrated ahead, or half precision; "
                   "auto: static for models with Conv (when calibrated), dynamic otherwise.")
@click.option("--calibration", type=int, default=64, show_default=True, help="Samples of a zoo model's data to calibrate on.")
@click.option("--calibration-data", multiple=True, type=click.Path(), metavar="FILE.npz|FILE.npy",
              help="Calibration inputs: an .npz keyed by input name, or an .npy for a one-input model (repeatable).")
@click.option("--per-channel", is_flag=True, help="One int8 scale per output channel of each weight.")
@click.option("--exclude", default="", callback=lambda c, p, v: _name_list(c, p, v), metavar="OP,...",
              help="Op types to leave in fp32.")
@click.option("--quantize-output-layer", is_flag=True,
              help="int8 for the layer that computes the outputs too (by default it stays fp32: logits keep their precision).")
@click.option("--max-drop", type=float, default=1.0, show_default=True,
              help="Refuse a held-out metric drop over this: accuracy points, or percent worse (perplexity, error).")
@click.option("--force", is_flag=True, help="Write the model even when its metric drops more than --max-drop.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@verbose_option
def quantize(model, output, mode, calibration, calibration_data, per_channel, exclude, quantize_output_layer, max_drop,
             force, as_json):
    """Reduce an ONNX model to int8 or fp16 and report what it costs in accuracy."""
    from toolkit.quantize import QuantizeOptions, quantize_model

    options = QuantizeOptions(mode=mode, calibration=calibration, calibration_data=tuple(calibration_data),
                              per_channel=per_channel, exclude=exclude, max_drop=max_drop, force=force,
                              quantize_output_layer=quantize_output_layer)
    report = quantize_model(model, output, options, log=progress)
    if as_json:
        return _echo_json(report.to_json())
    for line in report.lines():
        click.echo(line)
    click.echo(f"wrote {report.path}")


@cli.command()
@click.argument("path", type=click.Path())
@click.option("--backend", type=click.Choice(["ort", "tvm"]), help="[default: tvm for artifacts, ort for ONNX]")
@device_option
@click.option("--input", "inputs", multiple=True, metavar="NAME=FILE.npy", help="An input from a .npy file; random when absent.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the outputs to an .npz file.", callback=_output_file)
@click.option("--json", "as_json", is_flag=True, help="Print the outputs as JSON.")
@verbose_option
def run(path, backend, device, inputs, output, as_json):
    """Run an ONNX file or an artifact once."""
    from toolkit import runtime
    from toolkit.runner import output_lines, outputs_json, read_feeds, save_outputs

    session = runtime.load(path, device=device, backend=backend)
    feeds = read_feeds(session.inputs, inputs)
    start = time.perf_counter()
    outputs = session.run(feeds)
    elapsed_ms = (time.perf_counter() - start) * 1e3
    if output:
        save_outputs(output, outputs)
    if as_json:
        return _echo_json({"backend": session.backend, "device": session.device, "latency_ms": elapsed_ms,
                           "outputs": outputs_json(outputs)})
    for line in output_lines(outputs):
        click.echo(line)
    click.echo(f"{session.backend} on {session.device}: {elapsed_ms:.3f} ms" + (f"; wrote {output}" if output else ""))


@cli.command()
@click.argument("path", metavar="MODEL.onnx|ARTIFACT", type=click.Path())
@click.option("--prompt", default="", help="Text to continue (gpt).")
@click.option("--length", type=click.IntRange(min=1), default=200, show_default=True, help="Characters to generate (gpt).")
@click.option("--temperature", type=float, default=0.8, show_default=True, help="0 is greedy (gpt).")
@click.option("--top-k", type=click.IntRange(min=1), help="Sample among the k likeliest characters only (gpt).")
@click.option("-n", "--count", type=click.IntRange(min=1), help="Samples, run as one batch [default: 1 text, 16 images].")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="PNG grid to write (vae, gan, diffusion).", callback=_output_file)
@click.option("--backend", type=click.Choice(["ort", "tvm"]), help="[default: tvm for artifacts, ort for ONNX]")
@click.option("--no-cache", is_flag=True, help="Run the full graph per character even when the KV-cache decode step is beside the model (gpt).")
@verbose_option
def generate(path, prompt, length, temperature, top_k, count, seed, output, backend, no_cache):
    """Sample text or images from an exported generative model through the runtime."""
    from toolkit.generate import Sampler, write_png_grid

    sampler = Sampler(path, backend=backend, cache=not no_cache)
    if sampler.kind == "text":
        if output:
            raise DltkError(f"{path} generates text, not images", "drop -o; the text is printed")
        for text in sampler.text(prompt, length, temperature, top_k, count or 1, seed):
            click.echo(text)
        return
    if not output:
        raise DltkError(f"{path} generates images", "give -o GRID.png")
    images = sampler.images(count or 16, seed)
    write_png_grid(images, output)
    click.echo(f"wrote {output} ({len(images)} images, {sampler.session.backend} on {sampler.session.device})")


def _int_list(ctx, param, value):
    try:
        numbers = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got '{value}'") from None
    if not numbers or min(numbers) < 1:
        raise click.BadParameter(f"expected positive integers, got '{value}'")
    return numbers


def _dim_sizes(values) -> dict[str, int]:
    sizes = {}
    for value in values:
        name, _, size = value.partition("=")
        if not name.strip() or not size.strip().isdigit() or int(size) < 1:
            raise click.BadParameter(f"expected NAME=SIZE with a positive size, got '{value}'")
        sizes[name.strip()] = int(size)
    return sizes


def _name_list(ctx, param, value):
    return tuple(v.strip() for v in value.split(",") if v.strip()) if value else ()


def _threads_list(ctx, param, value):
    return tuple(_int_list(ctx, param, value)) if value else (None,)


@cli.command()
@click.argument("source", metavar="NAME|CKPT|MODEL.onnx|ARTIFACT", required=False)
@click.option("--zoo", is_flag=True, help="Every model in the zoo; writes JSON, CSV, RESULTS.md and a plot to -o DIR.")
@click.option("-o", "--output", type=click.Path(file_okay=False), help="With --zoo [default: benchmarks/results/<machine>].")
@click.option("--note", default="", help="With --zoo: a line for RESULTS.md (e.g. that the machine was shared).")
@click.option("--backend", "backends", default="torch,ort,tvm", show_default=True, callback=_name_list,
              help="Comma-separated: torch, torch.compile, ort, tvm.")
@click.option("--batch", "batches", default="1", show_default=True, callback=_int_list, help="Comma-separated batch sizes.")
@click.option("--threads", default=None, callback=_threads_list, help="Comma-separated intra-op thread counts [default: each library's].")
@device_option
@click.option("--scenario", "scenarios", default="single-stream", show_default=True, callback=_name_list,
              help="Comma-separated: single-stream, multi-stream, offline, server.")
@click.option("--target-qps", type=float, help="server: run at this rate.")
@click.option("--p99-bound", type=float, help="server: search the highest QPS whose p99 stays under this many ms.")
@click.option("--samples-per-query", type=int, default=8, show_default=True, help="multi-stream: samples in each query.")
@click.option("--ort-opt", type=click.Choice(["disable", "basic", "extended", "all"]), default="all", show_default=True,
              help="ONNX Runtime graph optimization level.")
@click.option("--ort-providers", default="", callback=_name_list, help="ONNX Runtime providers [default: the device's].")
@click.option("--warmup", type=int, default=Budget.warmup, show_default=True, help="Calls before timing, in every run.")
@click.option("--min-iterations", type=int, default=Budget.min_iterations, show_default=True, help="Timed calls per run, at least.")
@click.option("--min-seconds", type=float, default=Budget.min_seconds, show_default=True, help="Seconds per run, at least.")
@click.option("--max-seconds", type=float, default=Budget.max_seconds, show_default=True, help="Seconds per run, at most.")
@click.option("--repeats", type=int, default=Budget.repeats, show_default=True, help="Runs of each measurement, for a confidence interval.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write results as JSON ('-' for stdout).", callback=_output_file)
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), help="Write results as CSV.", callback=_output_file)
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), callback=_output_file,
              help="Write a PNG: latency against batch, and its distribution.")
@click.option("--precision", "precisions", default="fp32", show_default=True, callback=_name_list,
              help="Comma-separated: fp32, int8 (dltk quantize's default), int8-static, int8-dynamic, fp16; "
                   "reduced copies run on ort and tvm beside fp32.")
@rpc_options("Run ARTIFACT on a remote device through a TVM RPC tracker, timed there.")
@verbose_option
@click.pass_context
def bench(ctx, source, zoo, output, note, backends, batches, threads, device, scenarios, target_qps, p99_bound,
          samples_per_query, ort_opt, ort_providers, warmup, min_iterations, min_seconds, max_seconds, repeats,
          json_path, csv_path, plot_path, precisions, rpc_tracker, rpc_key):
    """Measure latency per backend, batch size and thread count, side by side in one run."""
    from toolkit import bench as benchmark
    from toolkit.bench import output as results
    from toolkit.rpc import rpc_target

    if bool(source) == zoo:
        raise DltkError("give a model to benchmark or --zoo, not both or neither", "see 'dltk bench --help'")
    rpc = rpc_target(rpc_tracker, rpc_key)
    if rpc and ctx.get_parameter_source("backends") == click.core.ParameterSource.DEFAULT:
        backends = ("tvm",)  # the only backend a remote device runs
    plan = benchmark.Plan(
        backends=backends, batches=tuple(batches), threads=threads, scenarios=scenarios, device=device,
        budget=benchmark.Budget(warmup=warmup, min_iterations=min_iterations, min_seconds=min_seconds,
                                max_seconds=max_seconds, repeats=repeats),
        server=benchmark.ServerSettings(target_qps=target_qps, p99_bound_ms=p99_bound),
        samples_per_query=samples_per_query, ort=benchmark.OrtOptions(ort_opt, ort_providers), rpc=rpc,
        precisions=precisions,
    )
    if zoo:
        from toolkit.bench.suite import run_zoo

        run, written = run_zoo(plan, output, note, log=progress)
    else:
        run, written = benchmark.run_benchmark([source], plan, log=progress), None
    for warning in run.warnings:
        progress(f"warning: {warning}")
    files = results.write_files(run, json_path=json_path if json_path != "-" else None, csv_path=csv_path, plot_path=plot_path)
    if json_path == "-":
        return click.echo(results.to_json_text(run), nl=False)
    for table in results.tables(run):
        console().print(table)
    for path in files + ([written] if written else []):
        click.echo(f"wrote {path}")


@cli.command()
@click.argument("source", metavar="MODEL.onnx|ARTIFACT|NAME|CKPT")
@click.option("--backend", "backends", default="ort,tvm", show_default=True, callback=_name_list,
              help="Comma-separated; the first is the reference. torch needs a zoo NAME or CKPT.")
@click.option("--batch", type=click.IntRange(min=1), default=8, show_default=True, help="Samples per input.")
@device_option
@tolerance_options("Comparison")
@click.option("--per-layer", is_flag=True, help="Compare every intermediate tensor (ort vs tvm); name the first node that diverges.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@verbose_option
def compare(source, backends, batch, device, atol, rtol, per_layer, as_json):
    """Check that backends agree; exit 1 when any output is over tolerance."""
    from toolkit import compare as comparing

    if per_layer:
        result = comparing.compare_layers(source, backends, batch, device, atol, rtol, log=progress)
        failed = None if result.passed else result.summary()
        report, lines = result.to_json(), result.lines()
    else:
        results = comparing.compare_backends(source, backends, batch, device, atol, rtol, log=progress)
        failed = next((c.summary() for c in results if not c.passed), None)
        report, lines = {"comparisons": [c.to_json() for c in results]}, [x for c in results for x in c.lines()]
    if as_json:
        _echo_json(report)
    else:
        for line in lines:
            click.echo(line)
    if failed:
        raise CheckFailed(failed, "see the report above; loosen --atol/--rtol only if the difference is expected")


@cli.command()
@click.argument("models", nargs=-1, required=True, metavar="[NAME=]MODEL.onnx|ARTIFACT...")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0 for every interface).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="Port to listen on (0: a free one).")
@click.option("--max-batch-size", type=click.IntRange(min=1), default=BatchPolicy.max_batch_size, show_default=True,
              help="Rows per dynamic batch (1: no batching).")
@click.option("--max-delay-ms", type=click.FloatRange(min=0), default=BatchPolicy.max_delay_ms, show_default=True,
              help="Longest wait for a batch to fill.")
@click.option("--max-body-mb", type=click.FloatRange(min=0, min_open=True), default=64.0, show_default=True, help="Larger requests get 413.")
@click.option("--backend", type=click.Choice(["ort", "tvm"]), help="[default: tvm for artifacts, ort for ONNX]")
@device_option
@click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True,
              help="ONNX Runtime threads per model (0: one per core; 1 stops idle threads spinning beside the server).")
@verbose_option
def serve(models, host, port, max_batch_size, max_delay_ms, max_body_mb, backend, device, threads):
    """Serve models over the Open Inference Protocol v2 (KServe / Triton REST) until Ctrl-C or SIGTERM."""
    from toolkit.serve import BatchPolicy
    from toolkit.serve import serve as run_server

    policy = BatchPolicy(max_batch_size=max_batch_size, max_delay_ms=max_delay_ms)
    run_server(list(models), host=host, port=port, policy=policy, max_body_bytes=int(max_body_mb * 2**20),
               device=device, backend=backend, threads=threads, log=progress)
    progress("stopped")


@cli.command()
@click.argument("url")
@click.option("--model", help="Model to load [default: the server's only model].")
@click.option("--concurrency", type=click.IntRange(min=1), default=8, show_default=True, help="Closed-loop clients.")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), help="Poisson arrivals per second instead of a closed loop.")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=5.0, show_default=True, help="Seconds of load.")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True, help="Rows per request.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@verbose_option
def loadtest(url, model, concurrency, rate, duration, batch, as_json):
    """Load a v2 server: closed loop or Poisson arrivals; report QPS, p50/p99 latency and errors."""
    from toolkit.loadtest import load_server

    how = f"{rate:g} requests/s (Poisson)" if rate else f"{concurrency} clients (closed loop)"
    progress(f"loading {url} with {how} for {duration:g} s")
    result = load_server(url, model=model, concurrency=concurrency, rate=rate, duration=duration, batch=batch)
    if as_json:
        return _echo_json(result.to_json())
    click.echo(result.summary())
    if result.errors:
        click.echo("errors: " + ", ".join(f"{kind} x{count}" for kind, count in result.error_kinds.items()))


@cli.group()
def deploy():
    """Write deployment material: a Triton model repository, a KServe InferenceService."""


@deploy.command("triton")
@click.argument("model", type=click.Path(), metavar="MODEL.onnx|ARTIFACT")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Model repository directory.")
@click.option("--name", help="Model name [default: the model's own].")
@click.option("--max-batch-size", type=click.IntRange(min=0), default=32, show_default=True)
@click.option("--max-delay-us", type=click.IntRange(min=0), default=2000, show_default=True, help="Triton's max_queue_delay_microseconds.")
@click.option("--instances", type=click.IntRange(min=1), default=1, show_default=True)
@device_option
@verbose_option
def deploy_triton(model, output, name, max_batch_size, max_delay_us, instances, device):
    """Write a Triton model repository entry: NAME/config.pbtxt and NAME/1/model.onnx."""
    from toolkit.deploy import write_triton_repository

    directory = write_triton_repository(model, output, name=name, max_batch_size=max_batch_size,
                                        max_delay_us=max_delay_us, instances=instances, device=device)
    click.echo(f"wrote {directory}/config.pbtxt and {directory}/1/model.onnx")


@deploy.command("kserve")
@click.argument("model", type=click.Path(), metavar="MODEL.onnx|ARTIFACT")
@click.option("--storage-uri", required=True, help="Where the model is uploaded (s3://, gs://, pvc://...).")
@click.option("--image", help="Run this dltk server image instead of KServe's Triton runtime (serves TVM artifacts too).")
@click.option("--name", help="Model name [default: the model's own].")
@click.option("--cpu", default="1", show_default=True)
@click.option("--memory", default="1Gi", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="YAML file to write [default: stdout].", callback=_output_file)
@verbose_option
def deploy_kserve(model, storage_uri, image, name, cpu, memory, output):
    """Write a KServe InferenceService (v2 protocol) for a model."""
    from toolkit.deploy import kserve_manifest
    from toolkit.files import write_atomically

    manifest = kserve_manifest(model, name=name, storage_uri=storage_uri, image=image, cpu=cpu, memory=memory)
    if not output:
        return click.echo(manifest, nl=False)
    write_atomically(output, manifest)
    click.echo(f"wrote {output}")


@cli.group()
def debug():
    """Tools for models that fail: shrink them to what fails."""


@debug.command("reduce")
@click.argument("model", type=click.Path(), metavar="MODEL.onnx")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Subgraph to write [default: MODEL.reduced.onnx here].")
@click.option("--mode", type=click.Choice(["import", "compile", "diverge"]),
              help="The failure to reduce [default: the first the whole model shows].")
@click.option("--target", default="cpu", show_default=True, help="cpu, cuda, or a TVM target as JSON.")
@click.option("--atol", type=float, default=1e-4, show_default=True, help="Divergence tolerance, absolute.")
@click.option("--rtol", type=float, default=1e-3, show_default=True, help="Divergence tolerance, relative.")
@verbose_option
def debug_reduce(model, output, mode, target, atol, rtol):
    """Bisect a model TVM fails to import or compile, or whose outputs diverge, to the smallest failing subgraph."""
    from toolkit.reduce import reduce_file

    reduction, written = reduce_file(model, output, mode=mode, target=target, atol=atol, rtol=rtol, log=progress)
    click.echo(f"wrote {written}: {reduction.summary()}")


if __name__ == "__main__":
    main()
