"""Writing a dataset directory safely: what an output may be, one writer at a time, atomic swap.

Rules (docs/data.md "Where prepare writes"):

* the output must not be an existing file, the current folder, nor be or hold an input file;
* an existing non-empty folder that is not a unisrec dataset is refused unless ``force``; even then
  none of its files is deleted or replaced (a file there with one of the dataset's own names, e.g.
  ``items.parquet``, is refused outright);
* the new dataset is built complete in a temporary sibling folder, the entries that are not
  unisrec's own are hard-linked into it, and the two folders are exchanged in one step
  (``renameat2(RENAME_EXCHANGE)`` on Linux; elsewhere two renames, the old dataset kept aside until
  the new one is in place). A crash at any point leaves the old or the new dataset, complete;
* a writer (``prepare``, ``encode``; a training run on its output folder) holds an advisory lock
  (``fcntl.flock``) on the sibling file ``.NAME.lock`` for as long as it writes; a second writer is
  refused with the holder's pid. The lock file is removed when released;
* folders and files are created with the process umask (nothing is made private on its own).
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import secrets
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from unisrec.errors import UserError

try:  # POSIX; elsewhere writers are not locked
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

OWN_FILES = ("manifest.json", "items.parquet", "users.parquet", "sequences.npz")
_held: dict[Path, int] = {}  # lock path -> descriptor, for locks this process holds (re-entrant)


class OutputError(UserError):
    """An output folder that must not be written, or a write that failed (disk full, permissions)."""


# ------------------------------------------------------------------------------------------ lock
def _lock_path(target: Path) -> Path:
    sibling = target.parent / f".{target.name}.lock"
    if os.access(target.parent, os.W_OK) or not target.is_dir():
        return sibling
    return target / ".unisrec.lock"  # a dataset in a read-only parent folder: lock inside it


@contextmanager
def writer_lock(target: str | os.PathLike) -> Iterator[None]:
    """Hold the advisory writer lock of dataset directory ``target`` (re-entrant in one process)."""
    target = Path(target).resolve()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(target, exc) from None
    path = _lock_path(target)
    if fcntl is None or path in _held:
        yield
        return
    fd = _acquire(path, target)
    _held[path] = fd
    try:
        yield
    finally:
        del _held[path]
        try:
            os.unlink(path)  # still holding the lock: a waiter that opened this file retries
        except OSError:
            pass
        os.close(fd)


def _acquire(path: Path, target: Path) -> int:
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise write_error(target, exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise OutputError(f"{target} is being written by another unisrec process (pid {pid}); "
                              f"wait for it to finish (lock file {path})") from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:  # else the previous holder removed the file after we opened it: try again
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            return fd
        os.close(fd)


def lock_holder(target: str | os.PathLike) -> str | None:
    """The pid (as written in the lock file) of a live process holding ``target``'s writer lock, or None.

    Only looks: nothing is created, and a lock file left by a process that died holds no lock (the
    kernel releases ``flock`` locks when their holder exits), so it reads as free."""
    if fcntl is None:
        return None
    path = _lock_path(Path(target).resolve())
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
    finally:
        os.close(fd)  # closing drops the shared lock taken just to look
    return None


# ------------------------------------------------------------------------------- output checks
def resolve_output(output: str | os.PathLike) -> Path:
    """The absolute output folder; the current folder (or one holding it) is refused."""
    if str(output).strip() == "":
        raise OutputError("--output is empty; give a folder, e.g. --output data/NAME")
    path = Path(output).expanduser().resolve()
    cwd = Path.cwd().resolve()
    if path == cwd or path in cwd.parents:
        raise OutputError(f"--output {output} is the current folder (or holds it); give a folder of its own, "
                          "e.g. --output data/NAME")
    return path


def read_manifest(path: Path) -> dict | None:
    """The manifest of a unisrec dataset directory, or None if ``path`` is not one."""
    try:
        manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or "format_version" not in manifest or "counts" not in manifest:
        return None
    return manifest


def inspect_output(path: Path, inputs: Iterable[str | os.PathLike | None] = (), force: bool = False) -> str:
    """What ``path`` is now -- "new", "empty", "dataset" (a unisrec dataset) or "foreign" (a
    non-empty folder written by someone else, allowed with ``force``) -- or an OutputError."""
    if path.exists() and not path.is_dir():
        raise OutputError(f"--output {path} is an existing file, not a folder; choose a folder")
    for given in inputs:
        if given is None:
            continue
        inp = Path(given).resolve()
        if inp == path or path in inp.parents:
            raise OutputError(f"--output {path} is or holds the input {given}; choose another output folder")
    if not path.exists():
        return "new"
    try:
        entries = sorted(p.name for p in path.iterdir())
    except OSError as exc:
        raise OutputError(f"--output {path}: cannot list the folder ({exc.strerror})") from None
    if not entries:
        return "empty"
    if read_manifest(path) is not None:
        return "dataset"
    if not force:
        raise OutputError(f"--output {path} is a non-empty folder that is not a unisrec dataset (it holds "
                          f"{len(entries)} entries, e.g. {entries[0]!r}); choose a new folder, or pass --force to "
                          "write the dataset into it (its files are kept)")
    clash = [n for n in (*OWN_FILES, "features") if n in entries]
    if clash:
        raise OutputError(f"--output {path}: {clash[0]} exists and was not written by unisrec; it is never "
                          "replaced, even with --force: move it away or choose another folder")
    return "foreign"


def own_entries(path: Path, manifest: dict | None) -> set[str]:
    """Relative paths in dataset ``path`` that unisrec wrote (everything else is kept on rewrite)."""
    if manifest is None:
        return set()
    own = set(OWN_FILES)
    cache = (manifest.get("features_dropped") or {}).get("cache") or {}
    for info in [*(manifest.get("features") or {}).values(), *cache.values()]:
        if isinstance(info, dict):
            own.update(str(info[k]) for k in ("file", "augmented_file", "keys_file") if info.get(k))
    for sub in (path, path / "features"):
        if sub.is_dir():
            own.update(str(p.relative_to(path)) for p in sub.glob(".*.tmp-*"))
    return own


# ------------------------------------------------------------------------------------ the swap
def make_temporary_sibling(path: Path) -> Path:
    """An empty folder beside ``path`` (created with the umask, unlike ``tempfile.mkdtemp``)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            tmp = path.parent / f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
            try:
                os.mkdir(tmp, 0o777)
                return tmp
            except FileExistsError:
                continue
    except OSError as exc:
        raise write_error(path, exc) from None


def carry_foreign(old: Path, new: Path, own: set[str]) -> None:
    """Hard-link every entry of ``old`` that unisrec did not write into ``new`` (same relative path),
    so exchanging the folders keeps them; refuses (before any swap) what cannot be linked."""
    for root, dirs, files in os.walk(old):
        rel_root = Path(root).relative_to(old)
        for name in sorted(files + [d for d in dirs if (Path(root) / d).is_symlink()]):
            rel = rel_root / name
            if str(rel) in own or (new / rel).exists():
                continue
            (new / rel_root).mkdir(parents=True, exist_ok=True)
            src = old / rel
            try:
                if src.is_symlink():
                    os.symlink(os.readlink(src), new / rel)
                else:
                    os.link(src, new / rel, follow_symlinks=False)
            except OSError as exc:
                raise OutputError(f"cannot keep {src} in the rewritten folder ({exc.strerror}); move it out of "
                                  f"{old} and run again") from None
        for d in list(dirs):
            if (Path(root) / d).is_symlink():
                dirs.remove(d)
            else:
                (new / rel_root / d).mkdir(parents=True, exist_ok=True)
                shutil.copystat(Path(root) / d, new / rel_root / d)


def exchange(a: Path, b: Path) -> None:
    """Swap two folders: atomically with Linux ``renameat2(RENAME_EXCHANGE)``, else by renames."""
    fn = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if fn is not None:
        at_fdcwd, rename_exchange = -100, 2
        if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise OSError(err, os.strerror(err), str(b))
    aside = b.with_name(f".{b.name}.old-{os.getpid()}")
    os.rename(b, aside)  # a crash here leaves the old folder complete at `aside`
    os.rename(a, b)
    os.rename(aside, a)


def install(tmp: Path, path: Path, kind: str) -> None:
    """Put the complete folder ``tmp`` at ``path`` (``kind`` from :func:`inspect_output`); the old
    content, if any, is removed afterwards (only unisrec's files and links to kept files remain in it)."""
    if kind in ("new", "empty"):
        os.rename(tmp, path)  # rename(2) replaces an empty folder in one step
        return
    exchange(tmp, path)
    shutil.rmtree(tmp, ignore_errors=True)


def write_error(path: Path, exc: OSError) -> OutputError:
    """A one-line message for a failed write; the old dataset (if any) is untouched."""
    reason = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
              errno.EACCES: "permission denied", errno.EPERM: "operation not permitted",
              errno.EROFS: "read-only file system"}.get(exc.errno, exc.strerror or str(exc))
    where = f" ({exc.filename})" if exc.filename else ""
    return OutputError(f"cannot write {path}: {reason}{where}; nothing was changed there")
