"""An exclusive, advisory lock on a folder (``folder/.lock``, POSIX ``flock``), released on exit.

The kernel drops a ``flock`` when its process dies, so a killed run never leaves a stale lock. Where
``fcntl`` is missing (not POSIX) the context manager does nothing.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator


class FolderBusy(OSError):
    """Another process holds the folder's lock (raised only with ``wait=False``); an OSError, so the
    CLI reports it in one line with exit code 2."""


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, *, wait: bool = True, what: str = "process") -> Iterator[None]:
    """Hold ``folder``'s lock for the ``with`` block; ``wait=False`` raises :class:`FolderBusy` at
    once (naming the holder's pid when it wrote one) instead of waiting."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    path = Path(folder) / ".lock"
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip()
            raise FolderBusy(f"another {what} is writing {folder}" + (f" (pid {holder})" if holder else "")
                             + "; wait for it to finish or stop it, then run again") from None
        try:
            f.seek(0)
            f.truncate()
            f.write(str(os.getpid()))
            f.flush()
            yield
        finally:
            f.seek(0)
            f.truncate()
            fcntl.flock(f, fcntl.LOCK_UN)
