"""Artifacts that a kill cannot tear, and one writer at a time (DESIGN.md "Trust in artifacts").

Every artifact is written to a temporary file in its own folder, fsynced, then renamed over
the target (a rename within one file system is atomic), so a reader sees the old file or the
new one, never half of one. Writers of a run directory or a CF file take a lock first; a second
writer fails at once with a message naming the lock and its holder.

    with atomic_path("RUN/cohort/features.parquet") as tmp:   # any writer that takes a path
        df.to_parquet(tmp)
    write_text("RUN/cohort/spec.yaml", text)
    with run_lock("RUN"):                                     # one writer per run directory
        ...
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

_UMASK = os.umask(0)
os.umask(_UMASK)

# The runner holds the run directory's lock for its stages (its children inherit this).
HELD_ENV = "SENSECF_RUN_LOCK_HELD"


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path next to `path`; on success it is fsynced and renamed onto `path`, on an
    exception it is removed and `path` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a writer that was killed
        stale.unlink(missing_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes it owner-only; an artifact is as readable as any file
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj, **kwargs) -> Path:
    kwargs.setdefault("indent", 2)
    return write_text(path, json.dumps(obj, **kwargs))


class LockedError(RuntimeError):
    """Another process writes the same run directory or file."""


class RunLock:
    """An exclusive lock file: run_lock(RUN) -> RUN/.lock, file_lock(FILE) -> .FILE.lock.

    Fails at once (timeout 0) or after `timeout` seconds with a message that names the lock
    file and the command holding it. Inside `launch.experiment` the runner holds the run's
    lock and its stages skip taking it again (HELD_ENV)."""

    def __init__(self, lock_file: str | Path, *, timeout: float = 0.0):
        self.lock_file = Path(lock_file)
        self.info_file = self.lock_file.with_name(self.lock_file.name + ".holder")
        self.timeout = timeout
        self._lock = None

    def _held_by_parent(self) -> bool:
        held = os.environ.get(HELD_ENV)
        return bool(held) and Path(held).resolve() == self.lock_file.resolve()

    def __enter__(self) -> RunLock:
        if self._held_by_parent():
            return self
        self.lock_file.parent.mkdir(parents=True, exist_ok=True)
        self._lock = FileLock(self.lock_file, timeout=self.timeout)
        try:
            self._lock.acquire()
        except Timeout:
            holder = self.info_file.read_text().strip() if self.info_file.exists() else "unknown process"
            raise LockedError(
                f"{self.lock_file}: another writer holds this lock ({holder}); wait for it to finish"
            ) from None
        self.info_file.write_text(f"pid {os.getpid()}: {' '.join(sys.argv)[:300]}")
        return self

    def __exit__(self, *exc) -> None:
        if self._lock is not None:
            self.info_file.unlink(missing_ok=True)
            self._lock.release()
            self._lock = None


def run_lock(run_dir: str | Path, *, timeout: float = 0.0) -> RunLock:
    """The lock of a whole run directory: RUN/.lock."""
    return RunLock(Path(run_dir) / ".lock", timeout=timeout)


def file_lock(path: str | Path, *, timeout: float = 0.0) -> RunLock:
    """The lock of one appended file (a CF file): .FILE.lock beside it (hidden: bookkeeping)."""
    path = Path(path)
    return RunLock(path.with_name(f".{path.name}.lock"), timeout=timeout)
