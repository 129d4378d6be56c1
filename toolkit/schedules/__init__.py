"""Default CPU schedules for kernels without a tuning record, in the style of TVM's dlight.

Each rule matches the main TIR block of a fused PrimFunc (a matmul, a convolution, a
reduction) and schedules it for the target's caches, vector width and cores; a kernel no rule
matches keeps TVM's default code. `apply` is the pass `tune.build` runs after the tuning
records: it leaves kernels a record scheduled alone.

A scheduled kernel carries the attribute `dltk.schedule_rule` (the rule's name), so tests and
`dltk inspect` can tell which rule scheduled it.
"""

from __future__ import annotations

RULE_ATTR = "dltk.schedule_rule"


def rules() -> list:
    from toolkit.schedules.conv2d import Conv2d
    from toolkit.schedules.conv_transpose import ConvTranspose
    from toolkit.schedules.matmul import Matmul
    from toolkit.schedules.pool import Pool2d
    from toolkit.schedules.reduction import RowReduction
    from toolkit.schedules.winograd import WinogradInput, WinogradOutput

    return [WinogradInput(), WinogradOutput(), Matmul(), ConvTranspose(), Conv2d(), Pool2d(), RowReduction()]


def apply(mod, target=None):
    """Schedule every PrimFunc of `mod` that is not scheduled yet and that a rule matches."""
    import tvm

    target = target or tvm.target.Target.current(allow_none=False)
    if target.kind.name != "llvm":
        return mod
    updated = {}
    for gvar, func in mod.functions_items():
        if not isinstance(func, tvm.tirx.PrimFunc) or _is_scheduled(func):
            continue
        sch, name = _first_match(func, target)
        if sch is not None:
            updated[gvar] = sch.mod["main"].with_attr("tirx.is_scheduled", True).with_attr(RULE_ATTR, name)
    for gvar, func in updated.items():
        mod[gvar] = func
    return mod


def schedule(func, target):
    """The first matching rule's schedule of a PrimFunc, or None; its trace names the rule
    (an annotation of the root block), so a tuning record holding it is recognisable."""
    sch, name = _first_match(func, target)
    if sch is not None:
        sch.annotate(sch.get_sblock("root"), RULE_ATTR, name)
    return sch


def is_rule_trace(trace_json) -> bool:
    """Whether a trace (its JSON form) is a rule's schedule, as `schedule` returns it."""
    return any(inst[0] == "Annotate" and RULE_ATTR in [str(a) for a in inst[2]] for inst in trace_json[0])


def _first_match(func, target):
    if target.kind.name != "llvm":
        return None, None
    for rule in rules():
        sch = rule.apply(func, target, False)
        if sch is not None:
            return sch, rule.name
    return None, None


def rule_of(func) -> str | None:
    """The name of the rule that scheduled a PrimFunc, or None."""
    value = func.attrs.get(RULE_ATTR) if func.attrs is not None else None
    return str(value) if value is not None else None


def _is_scheduled(func) -> bool:
    attrs = func.attrs
    return attrs is not None and int(attrs.get("tirx.is_scheduled", 0) or 0) == 1
