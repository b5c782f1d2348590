"""Prove that a folder was not modified: a fingerprint of every entry below it, before and after.

Usage in a test::

    from _checksum import unchanged

    with unchanged(pool_dir):            # fingerprints the folder, runs the body, compares
        cli("select", pool_dir, ...)

or by hand: ``before = tree_checksums(d)`` ... ``assert_same_tree(before, tree_checksums(d))``.

Each entry (hidden ones included, symbolic links never followed) is recorded by its path relative to
the folder (a str; names that are not UTF-8 keep their bytes as surrogates):

* file:   ("file", size, sha256 of the bytes, mtime_ns, permission bits)
* folder: ("dir", mtime_ns, permission bits)   (a folder's mtime changes when an entry is added/removed)
* link:   ("link", target text)                (the link itself; its target is not read)
* a file that cannot be read (permissions): ("unreadable", size, mtime_ns, permission bits)

The access time is not recorded: reading a file changes it, and reading is allowed.
"""
from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

Entry = tuple


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def tree_checksums(folder: str | os.PathLike) -> dict[str, Entry]:
    """relative path -> entry (module docstring) for the folder itself ('.') and everything below it."""
    folder = os.fspath(folder)
    st = os.lstat(folder)
    out: dict[str, Entry] = {".": ("dir", st.st_mtime_ns, stat.S_IMODE(st.st_mode))}
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = Path(os.path.relpath(full, folder)).as_posix()
            st = os.lstat(full)
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(full))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", st.st_mtime_ns, mode)
            else:
                try:
                    out[rel] = ("file", st.st_size, _sha256(full), st.st_mtime_ns, mode)
                except PermissionError:
                    out[rel] = ("unreadable", st.st_size, st.st_mtime_ns, mode)
    return out


def tree_diff(before: dict[str, Entry], after: dict[str, Entry]) -> list[str]:
    """Human-readable differences ('added x', 'removed y', 'changed z: ...'); [] when identical."""
    lines = [f"added {p!r}" for p in sorted(after.keys() - before.keys())]
    lines += [f"removed {p!r}" for p in sorted(before.keys() - after.keys())]
    lines += [f"changed {p!r}: {before[p]} -> {after[p]}" for p in sorted(before.keys() & after.keys())
              if before[p] != after[p]]
    return lines


def assert_same_tree(before: dict[str, Entry], after: dict[str, Entry]) -> None:
    diff = tree_diff(before, after)
    if diff:
        raise AssertionError("the folder was modified:\n  " + "\n  ".join(diff[:20]))


@contextmanager
def unchanged(folder: str | os.PathLike) -> Iterator[dict[str, Entry]]:
    """Fingerprint ``folder``, run the body, fail if any entry was added, removed or changed.

    Yields the fingerprint taken before (for tests that want to look at it)."""
    before = tree_checksums(folder)
    yield before
    assert_same_tree(before, tree_checksums(folder))
