"""Tuning tiny models with a handful of trials: records written, reused without tuning, parity kept."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from toolkit import runtime
from toolkit.compile import compile_model
from toolkit.errors import DltkError
from toolkit.paths import SHIPPED_RECORDS
from toolkit.records import target_key
from toolkit.tune import TuneOptions, is_default_schedule, parse_duration, tune_options

# Random samples of the design space and no cost model: the cheapest search that still
# builds, runs and records real candidates. Shipped records off: these tests start from nothing.
SMOKE = dict(cost_model="random", strategy="replay-trace", shipped=False)


@pytest.fixture(scope="module")
def mlp_onnx(tmp_path_factory):
    from toolkit.export import export_model

    path = tmp_path_factory.mktemp("mlp") / "mlp.onnx"
    export_model("mlp", path)  # untrained weights: tuning depends on shapes only
    return path


@pytest.fixture(scope="module")
def tuned(mlp_onnx, tmp_path_factory):
    root = tmp_path_factory.mktemp("tuned")
    options = TuneOptions(trials=4, db=root / "db", batches=(1, 8), **SMOKE)
    report = compile_model(mlp_onnx, root / "mlp.tvm", tuning=options, choose_engine=False)
    return root, options, report.artifact


def test_tuning_writes_records_and_static_variants(tuned):
    root, options, artifact = tuned
    tuning = artifact.manifest["tuning"]
    assert tuning["trials_run"] >= 1 and tuning["kernels_with_records"] >= 1
    assert tuning["static_batches"] == [1, 8]
    assert artifact.manifest["variants"] == {"1": "main_b1", "8": "main_b8"}
    records = root / "db" / tuning["target_key"] / "database_tuning_record.json"
    assert len(records.read_text().splitlines()) == tuning["trials_run"]


def test_tuned_artifact_matches_onnxruntime_on_every_batch(tuned, mlp_onnx):
    _, _, artifact = tuned
    session = runtime.load(artifact.path, backend="tvm")
    reference = ort.InferenceSession(str(mlp_onnx))
    for batch in (1, 3, 8):  # 1 and 8 run the tuned static variants, 3 the dynamic main
        x = np.random.default_rng(batch).standard_normal((batch, 64)).astype(np.float32)
        assert session.entry_for({"input": x}) == {1: "main_b1", 8: "main_b8"}.get(batch, "main")
        np.testing.assert_allclose(session.run({"input": x})["logits"], reference.run(None, {"input": x})[0],
                                   atol=1e-4, rtol=1e-3)


def test_second_compile_reuses_the_database_without_tuning(tuned, mlp_onnx):
    root, options, artifact = tuned
    again = compile_model(mlp_onnx, root / "again.tvm", tuning=options, choose_engine=False).artifact
    assert again.manifest["tuning"]["trials_run"] == 0
    assert again.manifest["variants"] == artifact.manifest["variants"]
    # and a plain compile that only names the database applies its records too
    plain = compile_model(mlp_onnx, root / "plain.tvm", tuning=TuneOptions(db=options.db, shipped=False),
                          choose_engine=False).artifact
    assert plain.manifest["tuning"]["trials_run"] == 0 and plain.manifest["variants"]


def test_compile_without_records_still_makes_static_variants_on_a_cpu(mlp_onnx, tmp_path):
    # the default schedules tile static shapes whole: batch 1 and 8 get copies of main, untuned
    artifact = compile_model(mlp_onnx, tmp_path / "m.tvm", tuning=TuneOptions(db=tmp_path / "empty", shipped=False),
                             choose_engine=False).artifact
    assert artifact.manifest["tuning"] is None and artifact.manifest["variants"] == {"1": "main_b1", "8": "main_b8"}


def test_compile_without_records_for_a_gpu_stays_one_dynamic_function(mlp_onnx):
    from tvm import relax

    from toolkit import tune
    from toolkit.compile import import_onnx

    prepared = tune.prepare(import_onnx(onnx.load(str(mlp_onnx))), {"kind": "cuda", "arch": "sm_90"}, ["batch"],
                            TuneOptions(shipped=False))
    assert prepared.variants == {}
    assert [gv.name_hint for gv, f in prepared.module.functions_items() if isinstance(f, relax.Function)] == ["main"]


def test_shipped_records_apply_when_the_target_matches(mlp_onnx, tmp_path):
    from toolkit.target import host_cpu

    key = target_key(host_cpu())
    if not (SHIPPED_RECORDS / key / "database_workload.json").is_file():
        pytest.skip(f"no records shipped for this host's target {key}")
    artifact = compile_model(mlp_onnx, tmp_path / "m.tvm", tuning=TuneOptions(db=tmp_path / "empty"),
                             choose_engine=False).artifact
    tuning = artifact.manifest["tuning"]
    assert tuning["shipped_records"] == key and tuning["trials_run"] == 0
    assert tuning["kernels_with_records"] == tuning["kernels"]  # every static kernel of the MLP
    assert artifact.manifest["variants"] == {"1": "main_b1", "8": "main_b8"}
    # The shipped matmuls read pre-packed weights: the re-layout was folded at compile time.
    assert "_prepacked" in _vm_bytecode(artifact)
    assert artifact.manifest["verification"]["status"] == "passed"


def _vm_bytecode(artifact) -> str:
    import tvm
    from tvm import relax

    return relax.VMExecutable(tvm.runtime.load_module(str(artifact.path / "model.so"))).as_text()


def test_target_key_names_cpu_and_cores_or_gpu_arch():
    assert target_key({"kind": "llvm", "mcpu": "znver3", "num-cores": 2}) == "llvm-znver3-2c"
    assert target_key({"kind": "cuda", "arch": "sm_90a"}) == "cuda-sm_90a"


def test_cli_options_become_tune_options(tmp_path):
    options = tune_options(32, "10m", tmp_path, [1, 8], "127.0.0.1:9190", "board")
    assert options.trials == 32 and options.time_budget_s == 600 and options.rpc.port == 9190
    assert parse_duration("90s") == 90 and parse_duration("1h") == 3600
    with pytest.raises(DltkError, match="needs both --rpc-tracker"):
        tune_options(32, None, None, [1], "127.0.0.1:9190", None)
    with pytest.raises(DltkError, match="not a duration"):
        parse_duration("soon")


def test_cli_compile_tune_reuses_the_database_and_inspect_shows_the_choice(tuned, mlp_onnx):
    from click.testing import CliRunner

    from toolkit.cli import cli

    root, options, _ = tuned
    out = root / "cli.tvm"
    result = CliRunner().invoke(cli, ["compile", str(mlp_onnx), "-o", str(out), "--tune", "--trials", "4",
                                      "--db", str(options.db), "--no-shipped-records"])
    assert result.exit_code == 0, result.output
    assert "not tuning again" in result.stderr
    assert "tuned batches [1, 8]" in result.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    engine = manifest["engine"]
    assert set(engine["p50_ms"]) == {"tvm", "ort"} and engine["chosen"] in ("tvm", "ort")
    assert runtime.load(out).backend == engine["chosen"]

    shown = CliRunner().invoke(cli, ["inspect", str(out)])
    assert shown.exit_code == 0, shown.output
    assert f"engine: {engine['chosen']} runs by default" in shown.stdout
    assert "main_b8" in shown.stdout


def test_each_kernel_starts_from_its_default_schedule_and_reshapes_are_not_tuned(lenet_onnx, tmp_path):
    # LeNet at batch 1: two convolutions, two max-pools, two matmuls and a flatten (a reshape).
    options = TuneOptions(trials=10, db=tmp_path / "db", batches=(1,), **SMOKE)
    artifact = compile_model(lenet_onnx, tmp_path / "lenet.tvm", tuning=options, choose_engine=False).artifact
    tuning = artifact.manifest["tuning"]
    assert tuning["kernels"] == 6  # the reshape is left to become a view of its input
    db = tmp_path / "db" / tuning["target_key"]
    records = [json.loads(line) for line in (db / "database_tuning_record.json").read_text().splitlines()]
    # [workload index, [trace, run_secs, target, args]]
    defaults = {index for index, (trace, *_rest) in records if is_default_schedule(trace)}
    assert len(defaults) == 6 and len(records) == 10
    assert artifact.manifest["verification"]["status"] == "passed"


def test_records_of_a_compatible_cpu_are_measured_here_before_they_apply(mlp_onnx, tmp_path, monkeypatch):
    """Records shipped for another CPU of this host's family (here: plain x86-64, which every
    x86-64 CPU runs) are timed beside the defaults, kept in this target's database, and reused."""
    import shutil

    from toolkit import records
    from toolkit.target import host_cpu

    host = host_cpu()
    if records.isa_level(host)[0] != "x86_64":
        pytest.skip("the foreign records here are x86-64 ones")
    # Enough trials that some kernels get a tuned record beside their default one.
    there = TuneOptions(trials=10, db=tmp_path / "there", batches=(1,), **SMOKE)
    compile_model(mlp_onnx, tmp_path / "there.tvm", tuning=there, choose_engine=False)
    foreign = dict(host, mcpu="x86-64")
    shipped = tmp_path / "shipped" / target_key(foreign)
    shutil.copytree(tmp_path / "there" / target_key(host), shipped, ignore=shutil.ignore_patterns("logs"))
    records.write_target(shipped, foreign)
    monkeypatch.setattr("toolkit.paths.SHIPPED_RECORDS", tmp_path / "shipped")

    local = TuneOptions(db=tmp_path / "local", batches=(1,))
    artifact = compile_model(mlp_onnx, tmp_path / "m.tvm", tuning=local, choose_engine=False).artifact
    tuning = artifact.manifest["tuning"]
    adopted = tuning["foreign_records"]
    assert adopted["from"] == [target_key(foreign)] and adopted["kernels"] >= 1
    assert 0 <= adopted["faster_here"] <= adopted["kernels"]
    assert tuning["shipped_records"] is None and tuning["kernels_with_records"] >= adopted["kernels"]
    lines = (tmp_path / "local" / target_key(host) / "database_tuning_record.json").read_text().splitlines()
    assert len(lines) == 2 * adopted["kernels"]  # each kernel: its default and the foreign record, timed here
    assert artifact.manifest["verification"]["status"] == "passed"

    again = compile_model(mlp_onnx, tmp_path / "again.tvm", tuning=local, choose_engine=False).artifact
    assert again.manifest["tuning"]["foreign_records"] is None  # measured once, then read from the database
    assert again.manifest["tuning"]["kernels_with_records"] == tuning["kernels_with_records"]


def test_remeasured_records_keep_each_kernels_best_beside_todays_default(tuned):
    """Shipping re-times each kernel's best record beside today's default schedule: every kernel
    keeps a default record, and a tuned one next to it where the source had one."""
    from toolkit.target import host_cpu
    from toolkit.tune import remeasure_records

    root, _, artifact = tuned
    source = root / "db" / artifact.manifest["tuning"]["target_key"]
    destination = root / "remeasured"
    counts = remeasure_records(source, destination, host_cpu())

    def by_workload(directory):
        kinds = {}
        for line in (directory / "database_tuning_record.json").read_text().splitlines():
            index, (trace, *_) = json.loads(line)
            kinds.setdefault(index, []).append(is_default_schedule(trace))
        return kinds

    before, after = by_workload(source), by_workload(destination)
    assert counts["kernels"] == len(before) == len(after) >= 1
    assert all(kinds.count(True) == 1 for kinds in after.values())  # one default each, timed now
    tuned_kernels = sum(not all(kinds) for kinds in before.values())
    assert sum(len(kinds) == 2 for kinds in after.values()) == tuned_kernels
    assert 0 <= counts["records_faster"] <= tuned_kernels


def test_fused_kernels_carry_no_attribute_of_ours(mlp_onnx):
    """A kernel's attributes are part of its workload hash: one left behind by dltk's own passes
    would keep every tuning record, shipped or the user's, from matching it."""
    import tvm

    from toolkit.compile import import_onnx
    from toolkit.onnx_file import load_onnx
    from toolkit.target import host_cpu
    from toolkit.tune import KERNEL_TAG, fuse

    target = tvm.target.Target(host_cpu())
    fused = fuse(import_onnx(load_onnx(mlp_onnx)), target)
    kernels = [f for _, f in fused.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    assert kernels and any(list(f.attrs.get("layout_free_buffers", [])) for f in kernels)
    assert not [f for f in kernels if KERNEL_TAG in f.attrs]


def _conv_then_pool(tmp_path):
    """A 3x3 convolution the Winograd rewrite takes, then a max-pool: one kernel of each kind."""
    from tests.toolkit.schedules.conftest import one_node_model

    rng = np.random.default_rng(0)
    model = one_node_model("Conv", {"x": [1, 32, 8, 8]}, {"w": rng.standard_normal((32, 32, 3, 3)) / 9}, 4,
                           kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    model.graph.node[-1].output[0] = "conv"
    model.graph.node.append(onnx.helper.make_node("MaxPool", ["conv"], ["y"], kernel_shape=[2, 2], strides=[2, 2]))
    path = tmp_path / "conv.onnx"
    onnx.save(model, path)
    return path


def test_winograd_kernels_keep_their_rules_schedules_and_the_rest_tune(tmp_path):
    options = TuneOptions(trials=4, db=tmp_path / "db", batches=(1,), **SMOKE)
    artifact = compile_model(_conv_then_pool(tmp_path), tmp_path / "conv.tvm", tuning=options, choose_engine=False).artifact
    tuning = artifact.manifest["tuning"]
    assert tuning["kernels"] == 1 and tuning["trials_run"] == 4  # the max-pool; not the 3 Winograd kernels
    assert artifact.manifest["verification"]["status"] == "passed"


def test_a_kernel_the_search_fails_on_keeps_its_default_schedule(mlp_onnx, tmp_path, monkeypatch):
    from tvm.s_tir import meta_schedule as ms

    def failing(**_kwargs):
        raise RuntimeError("parallel_for_dynamic error with Check failed")

    monkeypatch.setattr(ms.tune, "tune_tasks", failing)
    lines = []
    options = TuneOptions(trials=8, db=tmp_path / "db", batches=(1,), **SMOKE)
    artifact = compile_model(mlp_onnx, tmp_path / "mlp.tvm", tuning=options, choose_engine=False, log=lines.append).artifact
    tuning = artifact.manifest["tuning"]
    assert tuning["trials_run"] == tuning["kernels"]  # each kernel's default schedule, measured, and no more
    assert any("keeps its default schedule" in line and "Check failed" in line for line in lines), lines
    assert artifact.manifest["verification"]["status"] == "passed"
