"""Run directories: never overwrite a run unless told to, resume only what exists, durable JSON-lines logs.

``prepare_run_dir(path)`` creates a run directory and drops a marker file (``.attnlab-run``) in it.

* A missing or empty directory is used as is.
* An existing non-empty directory is refused with :class:`RunDirExistsError` (a ``FileExistsError``) unless
  ``resume=True`` (continue it) or ``force=True`` (delete it and start over) is passed.
* ``resume=True`` requires a committed checkpoint in ``<run>/checkpoint`` (see :mod:`attnlab.train.checkpoint`),
  otherwise :class:`NothingToResumeError` (a ``FileNotFoundError``) says there is nothing to resume.
* ``force=True`` deletes the whole tree, but only a directory that carries the marker (so only a directory this
  project created as a run), and never a symbolic link, a filesystem root, the home directory, the current
  working directory or any of their ancestors.

One writer per run directory: ``lock_run_dir(path)`` holds an OS file lock on ``<run>/.attnlab-lock`` (the
``filelock`` package: ``flock`` on POSIX), and a second process that tries to write the same directory gets
:class:`RunDirLockedError` at its start instead of corrupting the first one's saves (two writers delete each
other's checkpoint temp files and interleave their logs). ``prepare_run_dir`` takes the lock while it checks,
clears or marks the directory, and :meth:`attnlab.train.Trainer.fit` holds it for the whole run (training, every
checkpoint and the final weights), releasing it when the run ends, also by an exception. The operating system
drops the lock when its holder dies, even by ``SIGKILL``, so a leftover lock file never blocks a later run; like
the marker, the lock file does not count as content (a directory holding only them is still empty), and
``force`` keeps it while it clears the rest, so a waiting writer and the holder always lock the same file.

``append_jsonl(path, record)`` appends one JSON object per line and fsyncs, so a logged step survives a crash.
A kill in the middle of a write can leave a torn last line; the next append cuts it off first and
:func:`read_jsonl` skips it (with a warning). Non-finite floats are written as ``NaN``/``Infinity``, which Python's
``json`` reads back (a NaN loss is worth logging).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import filelock

from attnlab.train.checkpoint import atomic_write_bytes, fsync_dir, has_checkpoint

__all__ = [
    "CHECKPOINT_DIRNAME",
    "LOCK_FILE",
    "RUN_MARKER",
    "NothingToResumeError",
    "RunDirExistsError",
    "RunDirLockedError",
    "append_jsonl",
    "checkpoint_dir",
    "lock_run_dir",
    "prepare_run_dir",
    "read_jsonl",
]

RUN_MARKER = ".attnlab-run"
LOCK_FILE = ".attnlab-lock"
CHECKPOINT_DIRNAME = "checkpoint"

PathLike = str | os.PathLike[str]


class RunDirExistsError(FileExistsError):
    """The run directory already holds something and neither resume nor force was asked for."""


class NothingToResumeError(FileNotFoundError):
    """Resume was asked for but the run directory holds no committed checkpoint."""


class RunDirLockedError(RuntimeError):
    """Another process (or another thread of this one) holds the run directory's lock: it is writing that run."""


# The run directories this process has locked: resolved path -> [FileLock, owning thread, depth]. A flock is held
# per open file, so a second FileLock on the same path in this process would be refused like another process;
# this table makes the lock re-entrant within the owning thread instead (prepare_run_dir and Trainer.fit inside
# a caller's ``with lock_run_dir(run):``).
_held: dict[Path, list[Any]] = {}
_held_guard = threading.Lock()
os.register_at_fork(after_in_child=_held.clear)  # a forked child is another writer: it must lock for itself


@contextlib.contextmanager
def lock_run_dir(path: PathLike) -> Iterator[Path]:
    """Hold the lock of the run directory ``path`` (an existing directory) for the ``with`` block.

    Never waits: a lock held elsewhere fails at once, so a second writer learns it before doing any work.
    Re-entrant within one thread; released when the outermost block exits, also by an exception.

    Raises:
        RunDirLockedError: another process (or thread) holds the lock: it is writing this run directory.
        FileNotFoundError: ``path`` is not an existing directory.
    """
    run = Path(path).expanduser()
    if not run.is_dir():
        raise FileNotFoundError(f"run directory {run}: expected an existing directory to lock, found none")
    key = run.resolve()
    me = threading.get_ident()
    with _held_guard:
        entry = _held.get(key)
        if entry is None:
            lock = filelock.FileLock(key / LOCK_FILE, timeout=0)
            try:
                lock.acquire()
            except filelock.Timeout:
                raise RunDirLockedError(
                    f"run directory {run} is locked: another process is writing it (training or resuming the run "
                    f"there, lock file {key / LOCK_FILE}); wait until it finishes, or use another run directory"
                ) from None
            entry = _held[key] = [lock, me, 0]
        elif entry[1] != me:
            raise RunDirLockedError(
                f"run directory {run} is locked: another thread of this process is writing it; "
                "use another run directory"
            )
        entry[2] += 1
    try:
        yield run
    finally:
        with _held_guard:
            entry[2] -= 1
            if entry[2] == 0:
                del _held[key]
                entry[0].release()


def checkpoint_dir(run_dir: PathLike) -> Path:
    """Where a run keeps its checkpoint root (pass this to ``save_checkpoint``/``load_checkpoint``)."""
    return Path(run_dir) / CHECKPOINT_DIRNAME


def _is_same_or_ancestor(candidate: Path, of: Path) -> bool:
    return candidate == of or candidate in of.parents


def _refuse_unsafe_delete(path: Path) -> None:
    """Raise unless ``path`` is safe to delete with ``--force``: a marked run directory, nothing precious."""
    if path.is_symlink():
        raise RunDirExistsError(
            f"refusing --force on {path}: it is a symbolic link (to {path.resolve()}); remove the link yourself"
        )
    resolved = path.resolve()
    if resolved.parent == resolved:
        raise RunDirExistsError(f"refusing --force on {path}: it is a filesystem root")
    guarded = {"the home directory": Path.home(), "the current working directory": Path.cwd()}
    for what, guarded_path in guarded.items():
        if _is_same_or_ancestor(resolved, guarded_path.resolve()):
            raise RunDirExistsError(f"refusing --force on {path}: it is {what} or contains it ({guarded_path})")
    if not (resolved / RUN_MARKER).is_file():
        raise RunDirExistsError(
            f"refusing --force on {path}: it does not look like an attnlab run directory (no {RUN_MARKER} marker "
            "file); delete it yourself or choose another run directory"
        )


def _entries(path: Path) -> list[str]:
    """The directory's content: everything but the marker and the lock file (which say nothing about a run)."""
    return sorted(child.name for child in path.iterdir() if child.name not in (RUN_MARKER, LOCK_FILE))


def _clear(path: Path) -> None:
    """Delete everything in ``path`` but its lock file, which must stay: a new one would be a second lock."""
    for child in path.iterdir():
        if child.name == LOCK_FILE:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    fsync_dir(path)


def _mark(path: Path) -> None:
    if not (path / RUN_MARKER).exists():
        atomic_write_bytes(path / RUN_MARKER, b"attnlab run directory: safe to delete with --force\n")


def prepare_run_dir(path: PathLike, *, force: bool = False, resume: bool = False) -> Path:
    """Create (or reuse, or clear) the run directory ``path`` and return it.

    Args:
        path: the run directory.
        force: delete an existing non-empty run directory first (see the module docstring for what is refused).
        resume: continue an existing run; its checkpoint must exist. Mutually exclusive with ``force``.

    Raises:
        ValueError: both ``force`` and ``resume``.
        NotADirectoryError: ``path`` exists and is not a directory.
        RunDirExistsError: ``path`` is non-empty without ``resume``/``force``, or ``force`` would be unsafe.
        NothingToResumeError: ``resume`` but no committed checkpoint in ``checkpoint_dir(path)``.
        RunDirLockedError: another process is writing the run in ``path`` (see :func:`lock_run_dir`); nothing
            was changed.
    """
    if force and resume:
        raise ValueError("force and resume are mutually exclusive: received both (--force deletes the run to resume)")
    run = Path(path).expanduser()
    if run.exists() and not run.is_dir():
        raise NotADirectoryError(f"run directory {run}: expected a directory, found a file; choose another path")

    if resume:
        ckpt = checkpoint_dir(run)
        if not has_checkpoint(ckpt):
            why = "the run directory does not exist" if not run.exists() else f"no committed checkpoint in {ckpt}"
            raise NothingToResumeError(f"nothing to resume in {run}: {why}; run without --resume to start a new run")
        with lock_run_dir(run):  # refused while another process is writing the run
            _mark(run)
        return run

    if run.exists() and not (run / RUN_MARKER).is_file() and _entries(run):
        # Someone else's directory: always refused, here, before a lock file is left in it (no run of ours can
        # be live there: every run directory is marked before anything else is written to it).
        _refuse_non_empty(run, force)
    created = not run.exists()
    run.mkdir(parents=True, exist_ok=True)
    if created:
        fsync_dir(run.parent)
    with lock_run_dir(run):  # checked, cleared and marked under the lock: never a live run's directory
        if _entries(run):
            _refuse_non_empty(run, force)
            _clear(run)
        _mark(run)
    return run


def _refuse_non_empty(run: Path, force: bool) -> None:
    """Raise for a non-empty ``run`` unless ``force`` is given and deleting it is safe."""
    if not force:
        entries = _entries(run)
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise RunDirExistsError(
            f"run directory {run} already exists and is not empty ({len(entries)} entries: {shown}); "
            "pass --resume to continue it or --force to delete it and start over"
        )
    _refuse_unsafe_delete(run)


# ----------------------------------------------------------------------------------------------------------
# JSON lines
# ----------------------------------------------------------------------------------------------------------


def _cut_torn_tail(f: Any, size: int) -> None:
    """If the file does not end with a newline (a write was killed), truncate it after its last newline."""
    if size == 0:
        return
    f.seek(size - 1)
    if f.read(1) == b"\n":
        return
    pos, chunk = size, 1 << 16
    while pos > 0:
        start = max(0, pos - chunk)
        f.seek(start)
        block = f.read(pos - start)
        if (i := block.rfind(b"\n")) >= 0:
            f.truncate(start + i + 1)
            return
        pos = start
    f.truncate(0)


def append_jsonl(path: PathLike, record: Mapping[str, Any]) -> None:
    """Append ``record`` as one JSON line to ``path`` (created if missing), flushed and fsync-ed before returning.

    Raises:
        TypeError: ``record`` is not a mapping or holds a value JSON cannot encode (the message names it).
    """
    if not isinstance(record, Mapping):
        raise TypeError(f"record: expected a mapping (one JSON object per line), received {type(record).__name__}")
    try:
        line = json.dumps(dict(record), ensure_ascii=False, separators=(",", ":")) + "\n"
    except (TypeError, ValueError) as exc:
        raise TypeError(f"record: expected JSON-able values, received {exc}") from None
    path = Path(path)
    created = not path.exists()
    with open(path, "a+b") as f:
        size = f.seek(0, os.SEEK_END)
        _cut_torn_tail(f, size)
        f.write(line.encode())  # O_APPEND: always at the end, one write call
        f.flush()
        os.fsync(f.fileno())
    if created:
        fsync_dir(path.parent)


def read_jsonl(path: PathLike) -> list[dict[str, Any]]:
    """Read the records of a JSON-lines file; a torn last line (a killed write) is skipped with a warning.

    Raises:
        ValueError: a line other than a torn last one is not valid JSON (the message gives the line number).
    """
    path = Path(path)
    data = path.read_bytes()
    lines = data.split(b"\n")
    torn = lines.pop() if lines else b""  # the part after the last newline: empty unless a write was cut
    records = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            records.append(json.loads(raw))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: line {number} is not valid JSON ({exc})") from None
    if torn.strip():
        warnings.warn(
            f"{path}: skipping a torn last line ({len(torn)} bytes without a newline)", RuntimeWarning, stacklevel=2
        )
    return records
