"""Write a file so that a reader (or a process killed half-way) never sees it half-written.

The content goes to ``NAME.tmp<pid>[SUFFIX]`` beside the target, is flushed to disk, then renamed over
the target. On failure the temporary file is removed and the old target stays. A temporary left by a
process killed outright keeps that name pattern, which
:func:`coldseg.io.outputs.remove_dead_temp_files` recognises and removes later.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object], *, suffix: str = "") -> Path:
    """``write(tmp)`` fills a temporary file, which then replaces ``path``.

    suffix: an extension some writers insist on (``np.save`` adds ``.npy``, matplotlib reads the
    format from ``.png``). Raises whatever ``write`` or the file system raised.
    """
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}{suffix}")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))
