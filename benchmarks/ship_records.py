"""Ship the best record per kernel of a tuning database under toolkit/shipped_records/<target key>/ (package data).

    PYTHONPATH=. python benchmarks/ship_records.py ~/.cache/dltk/tuning/llvm-znver3-2c

`dltk compile` applies the shipped records whenever a model's kernels match and the target is the
same CPU or one of a compatible instruction-set family (measured first, see toolkit/records.py),
so users get tuned kernels without tuning. Only the fastest record of each kernel is kept
(MetaSchedule's dump_pruned), which keeps the files small.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tvm.s_tir import meta_schedule as ms

from toolkit.paths import SHIPPED_RECORDS
from toolkit.records import write_target


def json_db(directory: Path):
    return ms.database.JSONDatabase(
        path_workload=str(directory / "database_workload.json"),
        path_tuning_record=str(directory / "database_tuning_record.json"),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("database", type=Path, help="a tuning database directory, DB/<target key>")
    args = parser.parse_args()
    destination = SHIPPED_RECORDS / args.database.name
    destination.mkdir(parents=True, exist_ok=True)
    for name in ("database_workload.json", "database_tuning_record.json"):
        (destination / name).unlink(missing_ok=True)  # rewritten whole from the source database
    json_db(args.database).dump_pruned(json_db(destination))
    lines = (destination / "database_tuning_record.json").read_text().splitlines()
    # The target the records were tuned on decides which other CPUs may use them (toolkit/records.py).
    tuned_on = json.loads(lines[0])[1][2]
    write_target(destination, {k: v for k, v in tuned_on.items() if k in ("kind", "mtriple", "mcpu", "num-cores")})
    records = len(lines)
    print(f"wrote {records} records to {destination}")


if __name__ == "__main__":
    main()
