"""MetaSchedule tuning of a Relax module, and a tuning database that later compiles reuse.

How a dynamic-batch model gets tuned kernels: MetaSchedule cannot tune a kernel whose shapes
hold a symbolic batch, so the module gets static copies of `main` for chosen batch sizes
(`main_b1`, `main_b8`, ...) next to the dynamic `main`. Only the static copies' kernels are
tuned; the runtime calls `main_bN` when the input batch is N and `main` (default schedules)
otherwise, like TensorRT's optimization profiles. On CPUs the static copies are made with or without
records: the default schedules tile a static shape whole and Winograd convolutions
(toolkit/schedules/winograd.py) need one (the untuned GPT ran 1.5-1.9x ONNX Runtime's p50 on its dynamic
`main`, 0.96x on the copies). On GPUs they are kept only when the database has records for the model's
kernels; otherwise the compile is the plain dynamic module.

Records live in a MetaSchedule JSON database, one directory per target (`DB/<target key>/`),
because MetaSchedule matches records by workload alone, not by target. Tuning counts the
records a database already holds for the model's kernels against `--trials`, so a second
run continues an interrupted one and a finished one is not tuned again. Records shipped
under `toolkit/shipped_records/<target key>/` are applied when they match (toolkit/records.py).

Each kernel's first record is its default schedule (a `toolkit.schedules` rule's, else TVM's
untuned code), measured like any candidate, so a tuned schedule replaces the default only where
it measured faster (MetaSchedule's space for small pooling and elementwise kernels holds only
parallel schedules, slower than serial at batch 1).
Pure reshapes are not tuned: left alone they become views, no kernel at all; nor are Winograd
kernels, which keep their rules' schedules (see `_tunable`). On CPUs the
tuned kernels may read their weights in a blocked layout, packed once at compile time.

Builds run in this process: MetaSchedule's LocalBuilder starts fresh worker processes for
every batch, each paying about a minute importing TVM's tensor intrinsics.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from toolkit import cuda, paths, schedules
from toolkit.errors import DltkError, first_line
from toolkit.fast_math import fast_math
from toolkit.nan import propagate_nan
from toolkit.records import ShippedRecords, shipped_for, target_key
from toolkit.rpc import RpcTarget, rpc_target
from toolkit.runtime.tvm_runtime import size_thread_pool
from toolkit.schedules import winograd

DEFAULT_BATCHES = (1, 8)
TRIALS_PER_ROUND = 16  # candidates measured per kernel per round, as MetaSchedule's default batch
DEFAULT_SCHEDULE_BLOCK = ("root", "main")  # the default schedule's record looks this block up, nothing more


@dataclass(frozen=True)
class TuneOptions:
    trials: int = 0  # measured candidates in all for this model; 0 applies existing records only
    time_budget_s: float | None = None  # stop tuning after this long (records so far are kept)
    db: Path | None = None  # database root; default: the dltk cache
    batches: tuple[int, ...] = DEFAULT_BATCHES  # static variants for a dynamic batch
    cost_model: str = "xgb"  # "xgb" (the tune extra) or "random"
    # "evolutionary" (MetaSchedule's search guided by the cost model), or "replay-trace":
    # random samples of the design space, much cheaper per batch, for smoke tests.
    strategy: str = "evolutionary"
    rpc: RpcTarget | None = None
    shipped: bool = True  # apply the records shipped under toolkit/shipped_records/ when they match


@dataclass
class Prepared:
    """A legalized module ready to build: fused kernels, static variants, the records to apply."""

    module: object  # tvm.IRModule
    database: object  # meta_schedule Database
    variants: dict[int, str] = field(default_factory=dict)  # batch size -> Relax function name
    manifest: dict | None = None  # what the artifact's manifest records under "tuning"
    gpu_schedules: dict | None = None  # set by a CUDA build: kernels, and how many dlight and records scheduled




def prepare(module, target: dict, batch_symbols: list[str], options: TuneOptions, log=lambda line: None,
            static_dims: dict[str, int] | None = None) -> Prepared:
    """Add static variants, fuse, tune as asked, and keep the variants the records cover.

    static_dims: other symbolic dims the variants bind too, e.g. {"sequence": 64}.
    """
    import tvm
    from tvm import relax
    from tvm.s_tir import meta_schedule as ms

    _quiet_meta_schedule_console()
    tvm_target = tvm.target.Target(target)
    key = target_key(target)
    user_dir = user_db_path(options, target)
    shipped = shipped_for(target) if options.shipped else []
    # The default database (the dltk cache) is read whenever it exists: a plain compile reuses
    # what an earlier `--tune` without --db recorded (and foreign records measured here).
    has_records = (user_dir / "database_workload.json").is_file()
    # On CPUs static variants pay off without records too: the default schedules tile a static shape whole
    # (no predicated tails) and Winograd convolutions need one. Elsewhere they are kept only where records
    # cover them: with no records to be had, make none.
    static_pays = tvm_target.kind.name == "llvm"
    may_have_records = bool(options.trials or options.db or has_records or shipped)
    batches = [b for b in options.batches if b > 0] if batch_symbols and (may_have_records or static_pays) else []
    variants = {b: f"main_b{b}" for b in batches}
    try:
        fused = fuse(_with_static_variants(module, batch_symbols, variants, static_dims or {}), tvm_target)
    except Exception as e:  # TVM's passes refuse some graphs with copies (e.g. rewritten LSTMs)
        if not variants:
            raise
        log(f"static-batch variants skipped: TVM could not fuse them ({first_line(e)[:100]})")
        variants = {}
        fused = fuse(module, tvm_target)
    module = fused
    tasks = [t for t in ms.relax_integration.extract_tasks(module, tvm_target) if _tunable(t)]

    exact_shipped = next((s for s in shipped if s.exact), None)
    foreign = [s for s in shipped if not s.exact]
    user_db = _open_db(user_dir) if (options.trials or options.db or has_records or foreign) else None
    shipped_db = _open_db(exact_shipped.directory) if exact_shipped else None
    foreign_report = _adopt_foreign_records(tasks, foreign, [d for d in (user_db, shipped_db) if d], user_db,
                                            tvm_target, log) if foreign and tasks else None
    databases = [d for d in (user_db, shipped_db) if d is not None]

    trials_run, seconds = 0, 0.0
    if options.trials > 0 and not tasks:
        log("tuning: nothing to tune; symbolic shapes, reshapes and Winograd kernels keep their default schedules")
    if options.trials > 0 and tasks:
        done = _records_for(tasks, databases)
        remaining = options.trials - sum(done)
        if remaining > 0:
            log(f"tuning {len(tasks)} kernels for {key}: {remaining} trials to go ({sum(done)} already in {user_dir})")
            start = time.perf_counter()
            trials_run = _tune(tasks, done, remaining, tvm_target, user_db, options, log)
            seconds = time.perf_counter() - start
        else:
            log(f"tuning: {sum(done)} records already cover {options.trials} trials; not tuning again")

    database = ms.database.UnionDatabase(*databases) if databases else ms.database.MemoryDatabase()
    covered = {i for i, t in enumerate(tasks) if any(d.has_workload(t.dispatched[0]) for d in databases)}
    kept = variants if covered or static_pays else {}
    dropped = [name for b, name in variants.items() if b not in kept]
    if dropped:
        module = relax.transform.DeadCodeElimination(["main", *kept.values()])(_without(module, dropped))
    manifest = None
    if covered:
        manifest = {
            "target_key": key,
            "database": str(user_dir) if user_db is not None else None,
            "shipped_records": exact_shipped.key if shipped_db is not None else None,
            "foreign_records": foreign_report,
            "static_batches": sorted(kept),
            "kernels": len(tasks),
            "kernels_with_records": len(covered),
            "trials_requested": options.trials,
            "trials_run": trials_run,
            "tuning_seconds": round(seconds, 1),
            "cost_model": options.cost_model if trials_run else None,
            "measured_on": str(options.rpc) if options.rpc else "local",
        }
    return Prepared(module, database, kept, manifest)


def user_db_path(options: TuneOptions, target: dict) -> Path:
    return (options.db or paths.tuning_db_root()) / target_key(target)


def fuse(module, tvm_target):
    """Legalize and fuse: the kernels MetaSchedule tunes are the fused TIR functions of this module.

    On CPUs the kernels' weight arguments are marked layout-free, so that a tuned schedule may read
    them in a blocked layout of its choosing (MetaSchedule's RewriteLayout); `build` then moves that
    re-layout out of the kernel and folds it into the constants at compile time (weight pre-packing).
    """
    import tvm
    from tvm import relax

    is_gpu = relax.pipeline.BackendDispatcher.is_gpu_target(tvm_target)
    passes = [
        *relax.pipeline.library_dispatch_passes(tvm_target),
        relax.transform.DecomposeOpsForInference(),
        *([] if is_gpu else [winograd.legalize()]),  # 3x3 convolutions with fewer multiply-adds
        relax.transform.LegalizeOps(),
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FoldConstant(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
    ]
    with tvm_target:
        fused = tvm.transform.Sequential(passes)(module)
    return fused if is_gpu else attach_layout_free_buffers(fused)


def attach_layout_free_buffers(mod):
    """relax.transform.AttachAttrLayoutFreeBuffers, except that a kernel with no layout-free
    buffer keeps its own body. The pass copies each kernel with s_tir.RenewDefs, whose copy of
    TVM's CumSum kernel loses the binding of its shape variables ("variables (batch, sequence)
    are used, but are not passed in as API arguments"; RoBERTa's position ids at a dynamic
    sequence length). Kernels are tagged with their name first, as the pass renames its copies."""
    import tvm
    from tvm import relax

    originals = {}
    tagged = tvm.IRModule(attrs=mod.attrs, global_infos=mod.global_infos)
    for gv, func in mod.functions_items():
        if isinstance(func, tvm.tirx.PrimFunc):
            originals[gv.name_hint] = func
            func = func.with_attr(KERNEL_TAG, gv.name_hint)
        tagged[gv] = func
    attached = relax.transform.AttachAttrLayoutFreeBuffers()(tagged)
    for gv, func in list(attached.functions_items()):
        if not isinstance(func, tvm.tirx.PrimFunc):
            continue
        if list(func.attrs.get("layout_free_buffers", [])):
            # untagged again: the tag would change the kernel's workload hash, and no record would match it
            attached[gv] = func.without_attr(KERNEL_TAG)
        else:
            attached[gv] = originals[str(func.attrs[KERNEL_TAG])].with_attr("layout_free_buffers", [])
    return attached


KERNEL_TAG = "dltk.kernel"


def build(prepared: Prepared, target: dict):
    """Apply the records, default schedules for the rest (toolkit.schedules on CPUs, dlight on GPUs),
    then lower and link."""
    import tvm
    from tvm import relax

    tvm_target = tvm.target.Target(target)
    is_gpu = relax.pipeline.BackendDispatcher.is_gpu_target(tvm_target)

    entries = [gv.name_hint for gv, f in prepared.module.functions.items() if isinstance(f, relax.Function)]

    @tvm.transform.module_pass(opt_level=3)
    def pipeline(mod, _ctx):
        mod = _apply_records(mod) if is_gpu else schedules.apply(_apply_records(mod), tvm_target)
        # Kernels tuned with a weight layout rewrite: split the rewrite off and fold it into the weights.
        mod = split_layout_rewrites(mod)
        mod = relax.transform.FoldConstant()(mod)
        mod = relax.transform.DeadCodeElimination(entries)(mod)
        if is_gpu:
            mod = _gpu_default_schedules(mod, prepared)
        if not is_gpu:  # on GPUs its Select combiner breaks dlight's cross-thread reductions (softmax: "No matched reducer")
            mod = propagate_nan(mod)  # after the records matched: it changes the kernels' TIR
            mod = fast_math(mod)  # vector exp, tanh, sigmoid, erf: LLVM would call scalar libm per element
        backend = _backend_pipeline(tvm_target)
        lower = backend.dataflow_lower_passes(tvm_target) + backend.finalize_passes(tvm_target)
        return tvm.transform.Sequential(lower)(mod)

    with tvm_target, prepared.database, tvm.transform.PassContext(opt_level=3):
        return relax.build(prepared.module, target=tvm_target, relax_pipeline=pipeline)


PREPACK_ANNOTATION = "meta_schedule.layout_rewrite_preproc"


def split_layout_rewrites(mod):
    """relax.transform.SplitLayoutRewritePreproc, shown only the kernels that pre-pack a weight.

    The pass checks every kernel and refuses one whose body is a single block without compute
    blocks inside, as TVM's CumSum kernel is (RoBERTa's position ids: "There should be a compute
    block if there is only one subtree under the root"); it changes nothing in kernels without
    the annotation, so they are set aside while it runs.
    """
    import tvm
    from tvm import relax

    aside = {gv: f for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc) and PREPACK_ANNOTATION not in str(f)}
    if not aside:
        return relax.transform.SplitLayoutRewritePreproc()(mod)
    shown = tvm.IRModule({gv: f for gv, f in mod.functions_items() if gv not in aside}, attrs=mod.attrs,
                         global_infos=mod.global_infos)
    if not any(isinstance(f, tvm.tirx.PrimFunc) for _, f in shown.functions_items()):
        return mod  # nothing pre-packs a weight
    split = relax.transform.SplitLayoutRewritePreproc()(shown)
    for gv, func in aside.items():
        split[gv] = func
    return split


def _apply_records(mod):
    """MetaScheduleApplyDatabase, except that a default-schedule record leaves its kernel unscheduled.

    A default-schedule record stands for TVM's untuned code, so where a schedule rule matches
    that kernel, the rule's schedule (`toolkit.schedules`) replaces it.
    """
    import tvm
    import tvm_ffi
    from tvm.relax.transform import MetaScheduleApplyDatabase

    applied = MetaScheduleApplyDatabase()(mod)
    for gvar, func in applied.functions_items():
        before = mod[gvar]
        if isinstance(func, tvm.tirx.PrimFunc) and not before.same_as(func) and tvm_ffi.structural_equal(func.body, before.body):
            applied[gvar] = before  # the record's trace changed nothing: a default-schedule record
    return applied


def gpu_default_rules() -> list:
    """dlight's GPU rules, tried in order on each kernel no tuning record scheduled."""
    from tvm.s_tir import dlight as dl

    return [dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.Reduction(), dl.gpu.GeneralReduction(), dl.gpu.Fallback()]


def _gpu_default_schedules(mod, prepared: Prepared):
    """dlight for the kernels records left unscheduled; every kernel must end up bound to GPU threads."""
    from tvm.s_tir import dlight as dl

    from_records = cuda.kernels_with_records(mod)
    mod = dl.ApplyDefaultSchedule(*gpu_default_rules())(mod)
    prepared.gpu_schedules = cuda.require_gpu_schedules(mod, from_records)
    return mod


def _backend_pipeline(tvm_target):
    """The target's pipeline module (relax.pipeline's dispatch misses cpu_generic's exports in 0.27)."""
    import importlib

    return importlib.import_module(f"tvm.relax.backend.{'cuda' if tvm_target.kind.name == 'cuda' else 'cpu_generic'}.pipeline")


# --- tuning ----------------------------------------------------------------------------


def _tune(tasks, done: list[int], remaining: int, tvm_target, database, options: TuneOptions, log) -> int:
    """Round-robin over the kernels, least-tuned and costliest first, one batch of candidates at a time.

    One MetaSchedule call per batch (rather than one for everything) is what lets a time budget
    stop between batches and a later run pick up where this one stopped.
    """
    from tvm.s_tir import meta_schedule as ms

    _require_tune_extra(options)
    _load_tensor_intrinsics(tvm_target)
    builder = _in_process_builder()
    runner = _runner(options.rpc)
    cost_model = ms.cost_model.CostModel.create(options.cost_model, num_tuning_cores=_cores(tvm_target))
    work_dir = str(database_path(database))
    per_round = max(4, min(TRIALS_PER_ROUND, math.ceil(remaining / len(tasks))))
    deadline = time.perf_counter() + options.time_budget_s if options.time_budget_s else math.inf
    start, run = time.perf_counter(), 0
    # Least-tuned first; among those the most work (FLOPs x uses), so a short budget goes to
    # the convolutions and matmuls rather than to reshapes.
    work = [_flops(t) * t.weight for t in tasks]
    exhausted: set[int] = set()  # kernels whose whole search space has been measured
    try:
        # On GPUs an unscheduled kernel does not build (threads unbound); dlight, not this, is its default.
        defaults_apply = tvm_target.kind.name != "cuda"
        for i, task in enumerate(tasks):
            if (defaults_apply and not _has_default_record(database, task)
                    and run < remaining and time.perf_counter() < deadline):
                measured = _record_default_schedule(task.dispatched[0], tvm_target, builder, runner, database)
                done[i] += measured
                run += measured
        while run < remaining and time.perf_counter() < deadline:
            order = sorted((i for i in range(len(tasks)) if i not in exhausted), key=lambda i: (done[i], -work[i]))
            progressed = False
            for i in order:
                if run >= remaining or time.perf_counter() >= deadline:
                    break
                count = min(per_round, remaining - run)
                _quiet_meta_schedule_console()
                contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
                    [tasks[i]], work_dir, strategy=options.strategy
                )
                before = _record_count(database, tasks[i])
                try:
                    ms.tune.tune_tasks(
                        tasks=contexts, task_weights=weights, work_dir=work_dir,
                        max_trials_global=count, num_trials_per_iter=count,
                        builder=builder, runner=runner, database=database, cost_model=cost_model,
                        task_scheduler="round-robin",
                    )
                except Exception as e:  # MetaSchedule raises TVMError, RuntimeError, ValueError
                    # A kernel the search fails on keeps its default schedule; the rest tune on.
                    log(f"tuning {tasks[i].task_name} stopped: {first_line(e)[:160]}; it keeps its default schedule")
                measured = _record_count(database, tasks[i]) - before
                done[i] += measured
                run += measured
                progressed = progressed or measured > 0
                if not measured:
                    exhausted.add(i)
                best = _best_us(database, tasks[i])
                log(f"tuning {run}/{remaining} trials, {_clock(time.perf_counter() - start)}: "
                    f"{tasks[i].task_name} best {best}")
            if not progressed:  # every kernel's search space is exhausted
                break
    finally:
        _shutdown(runner)
    if time.perf_counter() >= deadline:
        log(f"tuning: time budget of {_clock(options.time_budget_s)} spent after {run} trials; rerun to continue")
    return run


def _record_default_schedule(workload, tvm_target, builder, runner, database) -> int:
    """Measure a kernel's default schedule (a rule's, else TVM's untuned code), and keep it as its
    first record (1 if kept).

    MetaSchedule's design space for small spatial kernels (pooling, elementwise) holds only
    parallel schedules, whose thread wake-up costs more than the serial default does at small
    batches. With the default in the database a tuned schedule applies only where it is faster.
    """
    from tvm.s_tir import Schedule

    schedule = schedules.schedule(workload["main"], tvm_target)
    if schedule is None:  # no rule matches: TVM's untuned code
        schedule = Schedule(workload)
        # A record needs one instruction in its trace; looking a block up changes nothing.
        schedule.get_sblock(*DEFAULT_SCHEDULE_BLOCK)
    return _measure_and_commit(workload, schedule, tvm_target, builder, runner, database)


def _measure_and_commit(workload, schedule, tvm_target, builder, runner, database) -> int:
    """Build and time a scheduled kernel here; commit it to the database as a record (1 if kept)."""
    from tvm.s_tir import meta_schedule as ms

    (built,) = builder.build([ms.builder.BuilderInput(schedule.mod, tvm_target)])
    if built.error_msg:
        return 0
    # A schedule that pre-packs weights takes them in its own layout: its arguments, not the workload's.
    args_info = ms.arg_info.ArgInfo.from_entry_func(schedule.mod, remove_preproc=True)
    (future,) = runner.run([ms.runner.RunnerInput(built.artifact_path, "cpu", args_info)])
    result = future.result()
    if result.error_msg:
        return 0
    seconds = [float(s) for s in result.run_secs]
    database.commit_tuning_record(
        ms.database.TuningRecord(schedule.trace, database.commit_workload(workload), seconds, tvm_target, args_info)
    )
    return 1


def _measure_beside_default(workload, record, tvm_target, builder, runner, database) -> bool:
    """Time a record from elsewhere and the kernel's default schedule here, commit both to
    `database`; whether the record measured faster (and so applies)."""
    from tvm.s_tir import Schedule

    _record_default_schedule(workload, tvm_target, builder, runner, database)
    schedule = Schedule(workload)
    record.trace.apply_to_schedule(schedule, remove_postproc=False)
    if not _measure_and_commit(workload, schedule, tvm_target, builder, runner, database):
        return False
    top = list(database.get_top_k(database.commit_workload(workload), 1))
    return bool(top) and not is_default_schedule(top[0].trace.as_json())


def _adopt_foreign_records(tasks, foreign: list[ShippedRecords], local: list, database, tvm_target, log) -> dict | None:
    """Records shipped for another CPU of a compatible family, measured here before they may apply.

    For each kernel that no local database covers, the best record of the first compatible set
    that has it is timed here beside the kernel's default schedule, and both go into `database`
    (this target's own, in the dltk cache unless --db says otherwise): the faster one applies,
    and later compiles find both measured and measure nothing again.
    """
    opened = {source.key: _open_db(source.directory) for source in foreign}
    todo = []
    for task in tasks:
        workload = task.dispatched[0]
        if any(d.has_workload(workload) for d in local):
            continue
        for source in foreign:
            record = _best_tuned_record(opened[source.key], task)
            if record is not None:
                todo.append((task, record, source))
                break
    if not todo:
        return None
    sources = sorted({source.key for _, _, source in todo})
    try:
        _require_tune_extra(TuneOptions(cost_model="random"))
    except DltkError as e:
        log(f"records shipped for {', '.join(sources)} not applied: measuring them here {e.message}")
        return {"from": sources, "kernels": len(todo), "faster_here": 0, "skipped": e.message}
    log(f"measuring {len(todo)} kernels' records shipped for {', '.join(sources)} against their defaults here")
    _load_tensor_intrinsics(tvm_target)
    builder, runner = _in_process_builder(), _runner(None)
    try:
        faster = sum(_measure_beside_default(task.dispatched[0], record, tvm_target, builder, runner, database)
                     for task, record, _ in todo)
    finally:
        _shutdown(runner)
    return {"from": sources, "kernels": len(todo), "faster_here": faster}


def remeasure_records(source: Path, destination: Path, target: dict, log=lambda line: None) -> dict:
    """Each kernel's best record in the database `source` and the kernel's default schedule as it
    is today, both timed on this machine into the database `destination`.

    The default schedules improve between releases; a record tuned against an older default may
    now lose to the new one (Zen 3's ResNet-18 records did, by 6x). Shipping records through
    this keeps a record only where it still beats today's default. Returns how many kernels were
    measured and how many of their records still win.
    """
    import tvm
    import tvm_ffi

    _require_tune_extra(TuneOptions(cost_model="random"))
    tvm_target = tvm.target.Target(target)
    _load_tensor_intrinsics(tvm_target)
    source_db, database = _open_db(source), _open_db(destination)
    best = {}  # structural hash -> the workload's best record in `source`
    for record in source_db.get_all_tuning_records():
        key = tvm_ffi.structural_hash(record.workload.mod)
        if key not in best:
            best[key] = source_db.get_top_k(record.workload, 1)[0]
    builder, runner = _in_process_builder(), _runner(None)
    still_faster = 0
    try:
        for done, record in enumerate(best.values(), 1):
            workload = record.workload.mod
            if is_default_schedule(record.trace.as_json()):
                _record_default_schedule(workload, tvm_target, builder, runner, database)
            else:
                still_faster += _measure_beside_default(workload, record, tvm_target, builder, runner, database)
            log(f"{done}/{len(best)} kernels measured, {still_faster} records still beat the default schedule")
    finally:
        _shutdown(runner)
    return {"kernels": len(best), "records_faster": still_faster}


def _best_tuned_record(database, task):
    """The fastest record that is not the default-schedule placeholder, or None."""
    return next((r for r in _records(database, task) if not is_default_schedule(r.trace.as_json())), None)


def _shutdown(runner) -> None:
    pool = getattr(runner, "pool", None)
    if pool is not None:
        pool.shutdown()


def _has_default_record(database, task) -> bool:
    return any(is_default_schedule(r.trace.as_json()) for r in _records(database, task))


def is_default_schedule(trace_json) -> bool:
    """Whether a record's trace (its JSON form) is the default schedule `_record_default_schedule` measures:
    a schedule rule's (toolkit.schedules), or TVM's untuned code where no rule matches."""
    instructions = trace_json[0]
    untuned = len(instructions) == 1 and instructions[0][0] == "GetSBlock" and list(instructions[0][2]) == list(DEFAULT_SCHEDULE_BLOCK)
    return untuned or schedules.is_rule_trace(trace_json)


def _require_tune_extra(options: TuneOptions) -> None:
    import importlib.util

    needed = ["psutil", "cloudpickle"] + (["xgboost"] if options.cost_model == "xgb" else [])
    needed += ["tornado"] if options.rpc else []
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        raise DltkError(f"tuning needs {', '.join(missing)}, not installed", "pip install 'dltk[tune]'")


def _in_process_builder():
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder
    from tvm.s_tir.meta_schedule.builder.local_builder import default_build, default_export

    @derived_object
    class InProcessBuilder(PyBuilder):
        """Builds candidates in this process: no worker pays TVM's import again."""

        def build(self, build_inputs):
            results = []
            for build_input in build_inputs:
                try:
                    module = default_build(build_input.mod, build_input.target, None)
                    results.append(BuilderResult(default_export(module), None))
                except Exception as e:  # a candidate that does not build is a failed trial, not a failed run
                    results.append(BuilderResult(None, f"in-process build failed: {e}"))
            return results

    return InProcessBuilder()


def _runner(rpc: RpcTarget | None):
    from tvm.s_tir import meta_schedule as ms

    if rpc is None:
        size_thread_pool()  # candidates are timed on every core, as the artifact will run
        return ms.runner.LocalRunner(timeout_sec=30)
    config = ms.runner.RPCConfig(tracker_host=rpc.host, tracker_port=rpc.port, tracker_key=rpc.key, session_timeout_sec=60)
    return ms.runner.RPCRunner(rpc_config=config, max_workers=1)


def _load_tensor_intrinsics(tvm_target) -> None:
    """Register only the target's tensor intrinsics before MetaSchedule imports them all.

    `TuneContext` imports `tvm.s_tir.tensor_intrin`, whose package imports every backend's
    tables (CUDA's alone took 60-115 s here). Tuning for one target needs that target's.
    """
    import importlib
    import importlib.util
    import sys
    import types

    name = "tvm.s_tir.tensor_intrin"
    if name not in sys.modules:
        spec = importlib.util.find_spec(name)
        package = types.ModuleType(name)
        package.__path__ = list(spec.submodule_search_locations)
        package.__spec__ = spec
        package.__package__ = name
        sys.modules[name] = package
    kind = tvm_target.kind.name
    arch = str(tvm_target.attrs.get("mtriple", "x86_64"))
    wanted = "cuda" if kind == "cuda" else ("arm_cpu" if arch.startswith(("aarch64", "arm")) else "x86")
    importlib.import_module(f"{name}.{wanted}")


# --- module surgery ----------------------------------------------------------------------


def _with_static_variants(module, batch_symbols: list[str], variants: dict[int, str], static_dims: dict[str, int]):
    import tvm
    from tvm import relax

    module = tvm.IRModule(dict(module.functions), attrs=module.attrs) if variants else module
    for batch, name in variants.items():
        bound = relax.transform.BindSymbolicVars({**static_dims, **dict.fromkeys(batch_symbols, batch)}, "main")(
            tvm.IRModule({"main": module["main"]}, attrs=module.attrs)
        )
        module[name] = bound["main"].with_attr("global_symbol", name)
    return module


def _without(module, names: list[str]):
    import tvm

    return tvm.IRModule({gv: f for gv, f in module.functions.items() if gv.name_hint not in names}, attrs=module.attrs)


def _tunable(task) -> bool:
    """Static shapes, not a pure reshape (left unscheduled, a reshape becomes a free view), and not
    a Winograd kernel: MetaSchedule's space holds no better schedule for the transforms than their
    rules' (sampling one took minutes in TVM 0.27, their unrolled transforms are large) and its
    evolutionary search fails replaying the Winograd GEMM's traces."""
    from tvm.relax.analysis import has_reshape_pattern

    return (not _is_dynamic(task) and not has_reshape_pattern(task.dispatched[0]["main"])
            and not winograd.is_winograd_kernel(task.task_name))


def _is_dynamic(task) -> bool:
    import tvm

    func = task.dispatched[0]["main"]
    for param in func.params:
        shape = getattr(param.ty, "shape", None)
        if shape is None:  # a scalar argument: a size known only at run time
            return True
        if any(not isinstance(d, tvm.tirx.IntImm) for d in shape):
            return True
    return False


# --- databases ---------------------------------------------------------------------------


def _open_db(directory: Path):
    from tvm.s_tir import meta_schedule as ms

    directory.mkdir(parents=True, exist_ok=True)
    try:
        return ms.database.JSONDatabase(
            path_workload=str(directory / "database_workload.json"),
            path_tuning_record=str(directory / "database_tuning_record.json"),
        )
    except Exception as e:
        raise DltkError(f"cannot read the tuning database in {directory}: {first_line(e)}",
                        "point --db at another directory or delete this one") from e


def database_path(database) -> Path:
    return Path(database.path_workload).parent


def _records(database, task) -> list:
    """Every valid record the database holds for the task's kernel (none without a database)."""
    if database is None or not database.has_workload(task.dispatched[0]):
        return []
    return list(database.get_top_k(database.commit_workload(task.dispatched[0]), 1 << 20))


def _record_count(database, task) -> int:
    return len(_records(database, task))


def _records_for(tasks, databases) -> list[int]:
    return [max((_record_count(d, t) for d in databases), default=0) for t in tasks]


def _best_us(database, task) -> str:
    if not database.has_workload(task.dispatched[0]):
        return "none yet"
    top = database.get_top_k(database.commit_workload(task.dispatched[0]), 1)
    if not top:
        return "none valid yet"
    seconds = [float(s) for s in top[0].run_secs]
    return f"{1e6 * sum(seconds) / len(seconds):.1f} us"


def _flops(task) -> float:
    from tvm.s_tir.analysis import estimate_tir_flops

    try:
        return float(estimate_tir_flops(task.dispatched[0]))
    except Exception:  # some kernels have no FLOP estimate (opaque loops); tune them last
        return 0.0


def _cores(tvm_target) -> int:
    return int(tvm_target.attrs.get("num-cores", 1) or 1)


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s"


def _quiet_meta_schedule_console() -> None:
    """MetaSchedule prints its task tables on stdout; keep them in its log files (-v shows them).

    Its console handler takes the logger's level each time it sets up logging, so set it before each.
    """
    import logging

    verbose = logging.getLogger().level == logging.DEBUG
    logger = logging.getLogger("tvm.s_tir.meta_schedule")
    logger.setLevel(logging.INFO if verbose else logging.ERROR)
    # MetaSchedule's logging set-up lists the logger's handlers by name and fails on one
    # without a name (as a handler another library or a test harness attached has).
    for handler in list(logger.handlers):
        if handler.get_name() is None:
            logger.removeHandler(handler)


def parse_duration(text: str) -> float:
    """'90s', '10m', '1h', '600' -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600}
    text = text.strip().lower()
    try:
        if text and text[-1] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text)
    except ValueError:
        raise DltkError(f"--time-budget '{text}' is not a duration", "use e.g. 90s, 10m or 1h") from None


def tune_options(trials: int, time_budget: str | None, db, batches, rpc_tracker: str | None, rpc_key: str | None,
                 shipped: bool = True) -> TuneOptions:
    """TuneOptions from what `dltk compile` was given."""
    rpc = rpc_target(rpc_tracker, rpc_key)
    return TuneOptions(
        trials=trials,
        time_budget_s=parse_duration(time_budget) if time_budget else None,
        db=Path(db) if db else None,
        batches=tuple(batches),
        rpc=rpc,
        shipped=shipped,
    )
