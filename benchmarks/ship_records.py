"""Ship a tuning database's records under toolkit/shipped_records/<target key>/ (package data),
each kernel's best record only where it beats today's default schedule on this machine.

    PYTHONPATH=. python benchmarks/ship_records.py ~/.cache/dltk/tuning/llvm-znver3-2c
    PYTHONPATH=. python benchmarks/ship_records.py toolkit/shipped_records/llvm-znver3-2c   # after a rule changed

`dltk compile` applies the shipped records whenever a model's kernels match and the target is the
same CPU or one of a compatible instruction-set family (measured first, see toolkit/records.py),
so users get tuned kernels without tuning. Each kernel's best record and its default schedule
(toolkit/schedules) are timed here, on the CPU the records are for, and only the faster of the
two is shipped (MetaSchedule's dump_pruned), which keeps the files small. Run it again on the
shipped directory itself whenever a default schedule improves: a record that beat an older
default may lose to the new one, and shipped it would replace the better code.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from tvm.s_tir import meta_schedule as ms

from toolkit.paths import SHIPPED_RECORDS
from toolkit.records import target_key, write_target
from toolkit.target import resolve_target
from toolkit.tune import remeasure_records

DB_FILES = ("database_workload.json", "database_tuning_record.json")


def json_db(directory: Path):
    return ms.database.JSONDatabase(
        path_workload=str(directory / DB_FILES[0]), path_tuning_record=str(directory / DB_FILES[1])
    )


def tuned_on(database: Path) -> dict:
    """The target the database's records were tuned on (from its first record)."""
    first = (database / DB_FILES[1]).read_text().splitlines()[0]
    target = json.loads(first)[1][2]
    return {k: v for k, v in target.items() if k in ("kind", "mtriple", "mcpu", "num-cores")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("database", type=Path, help="a tuning database directory, DB/<target key>")
    args = parser.parse_args()
    target = tuned_on(args.database)
    here = target_key(resolve_target("cpu"))
    if target_key(target) != here:
        sys.exit(f"error: the records are for {target_key(target)}, this machine is {here} "
                 "(measure them on the CPU they are for)")
    destination = SHIPPED_RECORDS / args.database.name
    with tempfile.TemporaryDirectory() as scratch:
        source = Path(scratch) / "source"  # a copy: the source may be the shipped directory itself
        shutil.copytree(args.database, source)
        measured = Path(scratch) / "measured"
        counts = remeasure_records(source, measured, target, log=lambda line: print(line, flush=True))
        destination.mkdir(parents=True, exist_ok=True)
        for name in DB_FILES:
            (destination / name).unlink(missing_ok=True)  # rewritten whole from the measured database
        json_db(measured).dump_pruned(json_db(destination))
    # The target the records were tuned on decides which other CPUs may use them (toolkit/records.py).
    write_target(destination, target)
    print(f"wrote {counts['kernels']} kernels' records to {destination}: "
          f"{counts['records_faster']} tuned records beat today's default schedules, the rest ship the default")


if __name__ == "__main__":
    main()
