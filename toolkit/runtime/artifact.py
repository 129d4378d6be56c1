"""The artifact directory written by `dltk compile`: manifest, checks, crash-safe replacement.

    ARTIFACT_DIR/manifest.json   format, model, inputs/outputs, target, files with sha256, ...
    ARTIFACT_DIR/model.so        the TVM Relax executable, weights included
    ARTIFACT_DIR/model.onnx      the source model (provenance, ONNX Runtime fallback)

An artifact is untrusted input. `open_artifact` reads only files the manifest lists, each a plain
regular file inside the directory (no absolute path, no `..`, no symbolic link), and checks each
one's sha256 before anything opens it. That catches damage and tampering with a file; a hostile
manifest lists hostile hashes, which only a pinned hash of the manifest itself (`expected_sha256`)
refuses.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from toolkit.errors import DltkError
from toolkit.runtime.spec import TensorSpec

FORMAT = "dltk-artifact/1"
MANIFEST = "manifest.json"
LIBRARY = "model.so"
SOURCE_ONNX = "model.onnx"
MAX_MANIFEST_BYTES = 16 << 20  # a real manifest is a few kB
_RECOMPILE = "recompile the artifact with 'dltk compile'"


@dataclass(frozen=True)
class Artifact:
    path: Path
    manifest: dict
    manifest_sha256: str  # what `load(path, expected_sha256=...)` pins: it covers every file's hash

    @property
    def inputs(self) -> list[TensorSpec]:
        return [TensorSpec.from_json(t) for t in self.manifest["inputs"]]

    @property
    def outputs(self) -> list[TensorSpec]:
        return [TensorSpec.from_json(t) for t in self.manifest["outputs"]]

    @property
    def device(self) -> str:
        return self.manifest["device"]

    def file(self, name: str) -> Path:
        """The path of a file the manifest lists (and `open_artifact` verified); anything else is refused."""
        if name not in self.manifest["files"]:
            raise DltkError(f"artifact {self.path} does not list {name} in its {MANIFEST}", _RECOMPILE)
        return self.path / name


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return _sha256_of(f)


def _sha256_of(f) -> str:
    digest = hashlib.sha256()
    for block in iter(lambda: f.read(1 << 20), b""):
        digest.update(block)
    return digest.hexdigest()


def is_artifact(path) -> bool:
    """A directory whose manifest.json declares a dltk artifact format (not merely a file of that name)."""
    try:
        manifest = json.loads(_read_manifest(Path(path)))
    except (DltkError, ValueError):
        return False
    return isinstance(manifest, dict) and str(manifest.get("format", "")).startswith("dltk-artifact/")


def open_artifact(path, expected_sha256: str | None = None) -> Artifact:
    """Read and check the manifest, then check every listed file's sha256; refuse anything that does not match.

    expected_sha256: the sha256 of manifest.json the caller trusts (pinned-hash mode).
    """
    path = Path(path)
    data = _read_manifest(path)
    digest = hashlib.sha256(data).hexdigest()
    if expected_sha256 is not None and digest != expected_sha256.strip().lower():
        raise DltkError(f"artifact {path}: {MANIFEST} has sha256 {digest}, not the expected {expected_sha256}",
                        "this is not the artifact you pinned; get the right one or pin its new hash")
    try:
        manifest = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise DltkError(f"{path / MANIFEST} is not valid JSON: {e}", _RECOMPILE) from None
    if not isinstance(manifest, dict) or "format" not in manifest:
        raise DltkError(f"{path} is not a dltk artifact: its {MANIFEST} has no dltk 'format'", "compile one with 'dltk compile'")
    if manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise DltkError(f"{path} has format {found!r}, this dltk reads {FORMAT!r}", "recompile it with this dltk")
    _check_manifest(path, manifest)
    for name, entry in manifest["files"].items():
        if _hash_listed_file(path, name) != entry["sha256"]:
            raise DltkError(f"artifact {path}: {name} does not match its sha256 in {MANIFEST}",
                            f"the file was changed or damaged; {_RECOMPILE}")
    return Artifact(path, manifest, digest)


def _read_manifest(path: Path) -> bytes:
    if not path.is_dir():
        raise DltkError(f"{path} is not a dltk artifact: not a directory", "compile one with 'dltk compile'")
    try:
        return _read_regular(path / MANIFEST, MAX_MANIFEST_BYTES)
    except FileNotFoundError:
        raise DltkError(f"{path} is not a dltk artifact: no {MANIFEST}", "compile one with 'dltk compile'") from None


def _open_regular(file: Path) -> int:
    """A descriptor of `file`, refused unless it is a regular file reached without following a symbolic link."""
    try:
        fd = os.open(file, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as e:
        if e.errno == errno.ENOENT:
            raise FileNotFoundError(file) from None
        if e.errno == errno.ELOOP:
            raise DltkError(f"{file} is a symbolic link, which an artifact may not hold", _RECOMPILE) from None
        raise DltkError(f"cannot read {file}: {e.strerror}", "check its permissions") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise DltkError(f"{file} is not a regular file", _RECOMPILE)
    return fd


def _read_regular(file: Path, limit: int) -> bytes:
    with os.fdopen(_open_regular(file), "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise DltkError(f"{file} is over {limit} bytes, too large for a manifest", _RECOMPILE)
    return data


def _hash_listed_file(path: Path, name: str) -> str:
    try:
        fd = _open_regular(path / name)
    except FileNotFoundError:
        raise DltkError(f"artifact {path} is missing {name}", _RECOMPILE) from None
    with os.fdopen(fd, "rb") as f:
        return _sha256_of(f)


_SHA256 = re.compile(r"[0-9a-f]{64}")


def _check_manifest(path: Path, manifest: dict) -> None:
    """Refuse a manifest whose fields a loader would trip over, naming the first bad one."""

    def bad(what: str):
        return DltkError(f"artifact {path}: {MANIFEST} {what}", _RECOMPILE)

    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise bad("has no 'files' object listing the artifact's files")
    for name, entry in files.items():
        if not _plain_name(name):
            raise bad(f"lists {name!r}, which is not a plain file name inside the artifact")
        if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str) or not _SHA256.fullmatch(entry["sha256"]):
            raise bad(f"gives no sha256 for {name}")
    for kind in ("inputs", "outputs"):
        specs = manifest.get(kind)
        if not isinstance(specs, list) or not all(_valid_spec(s) for s in specs):
            raise bad(f"has no valid '{kind}' list (each {{name, shape, dtype}})")
    if manifest.get("device") not in ("cpu", "cuda"):
        raise bad(f"names device {manifest.get('device')!r}, not cpu or cuda")
    variants = manifest.get("variants", {})
    if not isinstance(variants, dict) or not all(
            isinstance(b, str) and b.isdigit() and isinstance(f, str) and f.isidentifier() for b, f in variants.items()):
        raise bad("has 'variants' that are not {batch: function name}")


def _plain_name(name) -> bool:
    return (isinstance(name, str) and name not in ("", ".", "..", MANIFEST) and "/" not in name and "\\" not in name
            and "\0" not in name)


def _valid_spec(spec) -> bool:
    import numpy as np

    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not isinstance(spec.get("shape"), list):
        return False
    if not all((isinstance(d, int) and not isinstance(d, bool) and d >= 1) or (isinstance(d, str) and d) for d in spec["shape"]):
        return False
    try:
        np.dtype(spec.get("dtype"))
    except (TypeError, ValueError):
        return False
    return isinstance(spec.get("dtype"), str)


def verified_sizes(manifest: dict) -> dict[str, int]:
    """Each symbolic dim at the largest size the compile verified it at: a size the model takes
    (wav2vec2's convolutions refuse 1 audio sample, where TVM then fails to allocate)."""
    sizes: dict[str, int] = {}
    for dims in (manifest.get("verification") or {}).get("verified_dims") or []:
        for name, size in dims.items():
            sizes[name] = max(size, sizes.get(name, 0))
    return sizes


def write_manifest(directory: Path, manifest: dict) -> dict:
    """Hash every file in `directory` into manifest["files"] and write manifest.json."""
    files = sorted(p for p in directory.iterdir() if p.is_file() and p.name != MANIFEST)
    manifest = dict(manifest, format=FORMAT)
    manifest["files"] = {p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size} for p in files}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def refuse_inside_artifact(path, option: str = "-o") -> None:
    """An output file must not land in an artifact: what is verified there must not change."""
    inside = next((p for p in Path(path).absolute().parents if is_artifact(p)), None)
    if inside is not None:
        raise DltkError(f"{option} {path} is inside the compiled artifact {inside}, which must not change",
                        "write it somewhere else")


# --- writing an artifact: stage beside it, swap it in ------------------------------------------


def check_replaceable(destination, replaceable=is_artifact, kind: str = "dltk artifact") -> None:
    """Refuse, before any work, a destination that is not an earlier `kind` (or an empty directory)."""
    destination = Path(destination)
    if Path.cwd().resolve().is_relative_to(destination.resolve()):
        raise DltkError(f"{destination} holds the current directory, which writing there would replace",
                        "give an output path outside it")
    if destination.is_symlink():
        raise DltkError(f"{destination} is a symbolic link", "give the real path of the output")
    refuse_inside_artifact(destination)
    if destination.exists() and not (destination.is_dir() and (not any(destination.iterdir()) or replaceable(destination))):
        raise DltkError(f"{destination} exists and is not a {kind}", "choose another output path, or remove it yourself")


@contextlib.contextmanager
def staging(destination, replaceable=is_artifact, kind: str = "dltk artifact"):
    """Yield a temporary directory beside `destination`, swapped into place on success.

    The swap is one atomic exchange (Linux renameat2), so the old or the new artifact is at the
    path at every instant; a crash or an error leaves the earlier one untouched. Only a `kind`
    (or an empty directory) is replaced. Debris of killed runs (`.NAME.XXXXXXXX`, `.NAME.old`)
    is removed first; a staging directory is locked while its run lives, so concurrent runs to
    one path each finish, and the last one's result stays.
    """
    destination = Path(destination)
    check_replaceable(destination, replaceable, kind)
    destination.parent.mkdir(parents=True, exist_ok=True)
    _clean_debris(destination, replaceable)
    tmp = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
    lock = _lock(tmp)
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; what is written here is meant to be shared
        yield tmp
        _swap_in(tmp, destination, replaceable, kind)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # after a swap it holds the replaced artifact
        os.close(lock)


def _lock(directory: Path) -> int:
    import fcntl

    fd = os.open(directory, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _is_stale(directory: Path) -> bool:
    """True when no live run holds `directory`'s lock (its run was killed)."""
    import fcntl

    try:
        fd = os.open(directory, os.O_RDONLY | os.O_NOFOLLOW | os.O_DIRECTORY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


STALE_AFTER_S = 60  # a staging directory younger than this may belong to a run that has not locked it yet


def _clean_debris(destination: Path, replaceable) -> None:
    old = destination.with_name(f".{destination.name}.old")
    if not destination.exists() and old.is_dir() and not old.is_symlink() and replaceable(old):
        with contextlib.suppress(OSError):  # another run may have put it back first
            os.rename(old, destination)  # a run without an atomic exchange died between its two renames
    debris = re.compile(re.escape(f".{destination.name}.") + r"([a-z0-9_]{8}|old)")
    for entry in destination.parent.iterdir():
        if (debris.fullmatch(entry.name) and entry.is_dir() and not entry.is_symlink()
                and time.time() - entry.stat().st_mtime > STALE_AFTER_S and _is_stale(entry)):
            shutil.rmtree(entry, ignore_errors=True)


def _swap_in(tmp: Path, destination: Path, replaceable, kind: str) -> None:
    try:
        os.rename(tmp, destination)  # nothing there yet (or an empty directory)
        return
    except OSError as e:
        if e.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR):
            raise
    if not _exchange(tmp, destination):
        return _replace_in_two_steps(tmp, destination)
    if not replaceable(tmp):  # what was there changed into something else since the check: put it back
        _exchange(tmp, destination)
        raise DltkError(f"{destination} was replaced by something that is not a {kind} while this ran",
                        "choose another output path")


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (renameat2 RENAME_EXCHANGE); False where the system cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # a file system without exchange
        return False
    raise OSError(code, os.strerror(code), str(b))


def _replace_in_two_steps(tmp: Path, destination: Path) -> None:
    """Without an atomic exchange: the old one aside, the new one in. A crash between the two
    renames leaves `.NAME.old`, which the next run to this path puts back (`_clean_debris`)."""
    old = destination.with_name(f".{destination.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    os.rename(destination, old)
    os.rename(tmp, destination)
    shutil.rmtree(old, ignore_errors=True)
