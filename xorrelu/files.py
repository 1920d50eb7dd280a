"""Files that are whole or absent, a job dir that one process at a time writes, and room kept
for the last word on a full disk.

- `write_json`, `save_torch`: write beside the target, then rename over it (the old file or
  the new one, never half of one).
- `locked(job_dir)`: an exclusive `flock` on the job dir for as long as a run or resume writes
  into it; a second process is refused with one line. Where the file system has no locks, a
  warning, and on.
- `Reserve`: a small file made when a job starts and deleted when it needs room, so that on a
  full disk the summary can still say `failed`.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import secrets
import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)


class JobDirBusy(Exception):
    """Another process writes into this job dir (or it already holds results)."""


def write_atomic(path: Path, content) -> None:
    """Write `content` (bytes, or a function that writes into a binary file) beside `path`, then
    rename it over `path`: a reader, a crash, a power loss or a Ctrl-C finds the old file or the
    new one, never part of one. The temp name is new (O_EXCL), so no other file is touched, and
    it is removed when the write fails or is interrupted."""
    path = Path(path)
    # Stop signals wait while the temp file is made and named: a Ctrl-C landing between its
    # creation and the `try` below would leave it behind. They come in inside the `try`.
    before = _block_stop_signals()
    try:
        fd, tmp = _open_beside(path)
        try:
            _restore_signals(before)
            with os.fdopen(fd, "wb") as file:
                if isinstance(content, bytes):
                    file.write(content)
                else:
                    content(file)
                file.flush()
                os.fsync(file.fileno())  # the data is on disk before the name points at it
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)  # ours: made just above by this process
            except OSError:
                pass
            raise
    finally:
        _restore_signals(before)


def _open_beside(path: Path) -> tuple[int, Path]:
    """A new temp file beside `path` (O_EXCL: never one that exists), open for writing."""
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temp name beside {path}")


_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR2}


def _block_stop_signals():
    if threading.current_thread() is not threading.main_thread():
        return None  # signals are delivered to the main thread only
    return signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)


def _restore_signals(before) -> None:
    if before is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def write_json(path: Path, obj: Any) -> None:
    write_atomic(path, (json.dumps(obj, indent=2, allow_nan=True) + "\n").encode())


def save_torch(path: Path, obj: Any) -> None:
    """torch.save, atomically. torch reports a failed write (a full disk) as a RuntimeError from
    its zip writer: it is an OSError here, as every other failed write."""
    try:
        write_atomic(path, lambda file: torch.save(obj, file))
    except RuntimeError as error:
        raise OSError(errno.EIO, f"cannot write {path}: {str(error).splitlines()[0]}") from error


@contextmanager
def locked(job_dir: Path):
    """Hold an exclusive lock on `job_dir` (flock on the directory itself: no file is made)."""
    fd = os.open(job_dir, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise JobDirBusy(
                f"another xorrelu process is writing into {job_dir}; "
                "wait for it to end (or stop it) and try again"
            ) from None
        except OSError as error:
            if error.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise
            log.warning(
                "%s cannot be locked (%s): make sure no other process writes into it",
                job_dir,
                error.strerror,
            )
        yield
    finally:
        os.close(fd)  # releases the lock


class Reserve:
    """RESERVE_BYTES set aside in the job dir while it runs: on a full disk, `release()` frees
    them for the summary and checkpoint. Only a file this class made is ever deleted."""

    NAME = ".xorrelu-reserve"
    RESERVE_BYTES = 256 * 1024  # a failed run's summary.json is ~2 KB; a checkpoint is more

    def __init__(self, job_dir: Path):
        self.path = Path(job_dir) / self.NAME
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:  # left by a run of this job that was killed: it is ours
            self.made = (
                self.path.is_file()
                and not self.path.is_symlink()
                and self.path.stat().st_size == self.RESERVE_BYTES
            )
            return
        except OSError:
            self.made = False  # no room even for this: the run will say so soon enough
            return
        try:
            os.write(fd, bytes(self.RESERVE_BYTES))
        except OSError:
            pass
        finally:
            os.close(fd)
        self.made = True

    def release(self) -> None:
        if self.made:
            self.path.unlink(missing_ok=True)
            self.made = False
