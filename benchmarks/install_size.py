"""What an install of dltk holds: the distributions its requirements pull in, and their size on disk.

    python -m benchmarks.install_size            # the runtime-only install against `dltk[full]`

Reads the requirements from pyproject.toml and follows them through the distributions installed in
this environment (the full one `make setup` makes), so it needs no network.
"""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def requirements(extras: tuple[str, ...] = ()) -> list[Requirement]:
    """dltk's base requirements and those of `extras`, as pyproject.toml lists them."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    found = [Requirement(r) for r in project["dependencies"]]
    pending = list(extras)
    while pending:
        for text in project["optional-dependencies"][pending.pop()]:
            requirement = Requirement(text)
            if canonicalize_name(requirement.name) == "dltk":  # an extra made of other extras
                pending += sorted(requirement.extras)
            else:
                found.append(requirement)
    return found


def closure(wanted: list[Requirement]) -> dict[str, importlib.metadata.Distribution]:
    """The installed distributions that `wanted` needs, theirs included (name -> distribution)."""
    found: dict[str, importlib.metadata.Distribution] = {}
    pending = [(r, "") for r in wanted]
    while pending:
        requirement, extra = pending.pop()
        if requirement.marker and not requirement.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(requirement.name)
        if name not in found:
            found[name] = importlib.metadata.distribution(requirement.name)
            pending += [(Requirement(r), "") for r in found[name].requires or []]
        for wanted_extra in requirement.extras:  # e.g. ray[serve]: the requirements of that extra too
            pending += [(Requirement(r), wanted_extra) for r in found[name].requires or []]
    return found


def size_bytes(distributions) -> int:
    total = 0
    for distribution in distributions:
        for file in distribution.files or []:
            path = Path(distribution.locate_file(file))
            if path.is_file():
                total += path.stat().st_size
    return total


def main() -> None:
    lean = closure(requirements())
    full = closure(requirements(("full",)))
    lean_mb, full_mb = size_bytes(lean.values()) / 1e6, size_bytes(full.values()) / 1e6
    print(f"runtime-only (pip install dltk): {len(lean)} distributions, {lean_mb:.0f} MB")
    print(f"full toolkit (pip install 'dltk[full]'): {len(full)} distributions, {full_mb:.0f} MB")
    print(f"ratio {lean_mb / full_mb:.2f}")


if __name__ == "__main__":
    main()
