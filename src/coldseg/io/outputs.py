"""Writing a run's outputs so that nothing is ever half-written or mixed with an older run.

Every file is first written (and fsynced) into a staging folder inside DIR
(``.coldseg-staging-<pid>@<host>-*``). :meth:`OutputDir.commit` then writes a small journal,
``DIR/.coldseg-commit.json`` (atomically: the commit point), and swaps the files in: the old manifest
goes first, each new file replaces its namesake with an atomic rename, files of the older run that
this run did not write are removed, the new manifest arrives last, then the journal goes.

So whatever moment a run is killed at, DIR holds either
  * a ``manifest.json`` whose ``files`` are exactly the files of one complete run (the old one, or
    the new one), or
  * no ``manifest.json`` but the journal: a commit in progress. The next ``OutputDir`` on DIR (any
    coldseg run writing there) first finishes it (the steps are idempotent), so the new run is
    complete again; :func:`recover` does the same on demand.
Staging folders and journals of runs that are no longer alive are removed by the next run. Failures
before the commit point (a full disk, a permission error) leave DIR as it was and raise
:class:`OutputError`, naming the folder.
"""
from __future__ import annotations

import csv
import errno
import io
import json
import os
import re
import shutil
import socket
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

MANIFEST = "manifest.json"
JOURNAL = ".coldseg-commit.json"
STAGE_PREFIX = ".coldseg-staging-"
_CHUNK = 1 << 20
_OWNER_RE = re.compile(r"^(\d+)@([A-Za-z0-9._]+?)(?:-|$)")  # 'pid@host', alone or before '-...'
_TMP_RE = re.compile(r"\.tmp(\d+)(\.[A-Za-z0-9]+)?$")  # temporaries named NAME.tmp<pid>[.EXT]
_ACTIVE: set[str] = set()  # staging folders of this process's OutputDirs not yet committed or aborted


class OutputError(OSError):
    """The output folder cannot be created or written."""


def output_error(folder: str | os.PathLike, e: OSError, what: str | None = None, *,
                 hint: str = "free some space or choose another --out (the outputs already in that "
                             "folder are unchanged)") -> OutputError:
    """An OutputError for ``e``, raised while writing ``what`` (e.g. a file name) into ``folder``:
    one line that names the folder, says "no space left" for a full disk or quota (then ``hint``),
    and keeps ``e.errno``."""
    where = f"while writing {what} into output folder" if what else "in output folder"
    if e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        why = "no space left on device" if e.errno == errno.ENOSPC else "no space left (disk quota exceeded)"
        msg = f"{why} {where} {str(folder)!r}; {hint}"
    elif what:
        msg = f"cannot write {what} into output folder {str(folder)!r}: {e.strerror or e}"
    else:
        msg = f"cannot write to output folder {str(folder)!r}: {e.strerror or e}"
    err = OutputError(msg)
    err.errno = e.errno
    return err


class OutputDir:
    """One run's outputs: write them with the ``write_*`` methods, then :meth:`commit` (or :meth:`abort`)."""

    def __init__(self, out: str | os.PathLike):
        self.path = Path(out)
        self._created: list[Path] = []  # folders this run made (DIR and missing parents), deepest first
        self._committed = False         # past the commit point: the stage now belongs to the journal
        try:
            if self.path.exists() and not self.path.is_dir():
                raise OutputError(f"output path {str(self.path)!r} exists and is not a folder")
            if not self.path.exists():
                missing = [self.path] + [p for p in self.path.parents if not p.exists()]
                self.path.mkdir(parents=True)
                self._created = [p for p in missing if p.is_dir()]
            recover(self.path)
            self.stage = Path(tempfile.mkdtemp(prefix=f"{STAGE_PREFIX}{_owner()}-", dir=self.path))
            _ACTIVE.add(os.path.abspath(self.stage))
        except OutputError:
            raise
        except OSError as e:
            raise output_error(self.path, e) from e

    # --- writers (into the staging folder) ---------------------------------------------------------
    def write_bytes(self, name: str, data: bytes) -> Path:
        p = self.stage / name
        with self.writing(name):
            _write_file(p, data)
        return p

    def write_text(self, name: str, text: str) -> Path:
        return self.write_bytes(name, text.encode("utf-8", "surrogateescape"))

    def write_json(self, name: str, obj: Any) -> Path:
        return self.write_text(name, json.dumps(obj, indent=2, ensure_ascii=False, default=_json_default) + "\n")

    def write_csv(self, name: str, header: list[str], rows: list[list[Any]]) -> Path:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
        return self.write_text(name, buf.getvalue())

    def write_npy(self, name: str, array: Any) -> Path:
        import numpy as np

        buf = io.BytesIO()
        np.save(buf, np.asarray(array))
        return self.write_bytes(name, buf.getvalue())

    @contextmanager
    def writing(self, what: str = "the outputs") -> Iterator[Path]:
        """``with out.writing("report.html") as stage:`` turns an OSError raised inside (by code that
        writes into the staging folder itself) into an :class:`OutputError` naming DIR."""
        try:
            yield self.stage
        except OutputError:
            raise
        except OSError as e:
            raise output_error(self.path, e, what) from e

    # --- swap in / abort -----------------------------------------------------------------------------
    def commit(self) -> list[str]:
        """Move every staged file into DIR; returns the names written. The manifest lands last."""
        new = sorted(p.name for p in self.stage.iterdir())
        old = _previous_files(self.path) - set(new)
        journal = {"stage": self.stage.name, "owner": _owner(), "new": new, "old": sorted(old)}
        tmp = self.path / f"{JOURNAL}.{self.stage.name}.tmp"
        try:
            _write_file(tmp, (json.dumps(journal) + "\n").encode())
            os.replace(tmp, self.path / JOURNAL)                         # the commit point
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise output_error(self.path, e, JOURNAL) from e
        self._committed = True
        _roll_forward(self.path, journal)
        _ACTIVE.discard(os.path.abspath(self.stage))
        return new

    def abort(self) -> None:
        _ACTIVE.discard(os.path.abspath(self.stage))
        if self._committed:  # the journal owns the stage: the next run finishes the commit
            return
        shutil.rmtree(self.stage, ignore_errors=True)
        for folder in self._created:  # only empty ones go: rmdir refuses anything else
            try:
                folder.rmdir()
            except OSError:
                break

    def __enter__(self) -> "OutputDir":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()


def recover(out: str | os.PathLike) -> bool:
    """Finish a commit that a killed run left half-done in ``out`` and remove staging folders of runs
    that are no longer alive. Returns True when an interrupted commit was finished."""
    path = Path(out)
    finished, live_stage = False, None
    jpath = path / JOURNAL
    if jpath.exists():
        try:
            journal = json.loads(jpath.read_text())
            stage, owner = journal["stage"], journal["owner"]
            if not (_plain(stage) and stage.startswith(STAGE_PREFIX) and isinstance(owner, str)
                    and all(_plain(n) for n in journal["new"] + journal["old"])):
                raise ValueError("not a coldseg journal")
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            warnings.warn(f"{jpath} is unreadable; removing it (the folder may hold files of two runs)",
                          stacklevel=2)
            jpath.unlink(missing_ok=True)
        else:
            if _alive(owner, path / stage):
                live_stage = stage
            else:
                _roll_forward(path, journal)
                finished = True
    for p in path.glob(STAGE_PREFIX + "*"):
        if p.name != live_stage and p.is_dir() and not p.is_symlink() and not _alive(_owner_of(p.name), p):
            shutil.rmtree(p, ignore_errors=True)
    for p in path.glob(f"{JOURNAL}.{STAGE_PREFIX}*.tmp"):  # a journal being written when killed
        stage = p.name[len(JOURNAL) + 1:-len(".tmp")]
        if not _alive(_owner_of(stage), path / stage):
            p.unlink(missing_ok=True)
    return finished


def remove_dead_temp_files(folder: str | os.PathLike) -> list[str]:
    """Remove the ``NAME.tmp<pid>`` (or ``NAME.tmp<pid>.EXT``) files that a write-then-rename left in
    ``folder`` when its process was killed (that process no longer runs on this host); returns their
    names. Another live process's temporaries, and this process's, are kept."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for p in folder.glob("*.tmp*"):
        m = _TMP_RE.search(p.name)
        if m is None or not p.is_file() or p.is_symlink():
            continue
        pid = int(m.group(1))
        if pid != os.getpid() and not _pid_alive(pid):
            p.unlink(missing_ok=True)
            removed.append(p.name)
    return sorted(removed)


def _roll_forward(path: Path, journal: dict[str, Any]) -> None:
    """The commit's swap, each step idempotent, so a run killed anywhere in it can be finished."""
    stage = path / journal["stage"]
    new, old = list(journal["new"]), list(journal["old"])
    if MANIFEST not in new or (stage / MANIFEST).exists():  # the new manifest has not landed yet
        (path / MANIFEST).unlink(missing_ok=True)
        for name in new:
            if name != MANIFEST and _plain(name) and (stage / name).exists():
                os.replace(stage / name, path / name)
        for name in old:
            target = path / name
            if _plain(name) and target.is_file() and not target.is_symlink():
                target.unlink(missing_ok=True)
        if MANIFEST in new:
            os.replace(stage / MANIFEST, path / MANIFEST)
    (path / JOURNAL).unlink(missing_ok=True)
    shutil.rmtree(stage, ignore_errors=True)


def _write_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` and fsync it (so a rename after it never exposes a short file)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0), 0o666)
    try:
        view = memoryview(data)
        off = 0
        while off < len(view):
            off += os.write(fd, view[off:off + _CHUNK])
        os.fsync(fd)
    finally:
        os.close(fd)


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "host"


def _owner() -> str:
    return f"{os.getpid()}@{_host()}"


def _owner_of(stage_name: str) -> str | None:
    return stage_name[len(STAGE_PREFIX):] if stage_name.startswith(STAGE_PREFIX) else None


def _alive(owner: str | None, stage: Path) -> bool:
    """Whether the run ``owner`` ('pid@host...') may still be using ``stage``. Unknown formats (an
    older coldseg) count as dead; runs of other hosts as alive (their pids cannot be checked here)."""
    m = _OWNER_RE.match(owner) if owner else None
    if m is None:
        return False
    pid, host = int(m.group(1)), m.group(2)
    if host != _host():
        return True
    if pid == os.getpid():
        return stage is not None and os.path.abspath(stage) in _ACTIVE
    return _pid_alive(pid)


def _pid_alive(pid: int) -> bool:
    if os.name == "nt":  # pragma: no cover - signal 0 means CTRL_C_EVENT there; never clean up
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed process its parent has not reaped yet is a zombie: dead for our purpose
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[-1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def _plain(name: str) -> bool:
    return isinstance(name, str) and "/" not in name and "\\" not in name and name not in ("", ".", "..")


def _previous_files(path: Path) -> set[str]:
    """Names an older coldseg run wrote here, read from its manifest (plain names only)."""
    man = path / MANIFEST
    if not man.exists():
        return set()
    try:
        files = json.loads(man.read_text()).get("files", [])
    except (OSError, ValueError, AttributeError):
        return set()
    return {f for f in files if _plain(f) and f != JOURNAL and not f.startswith(STAGE_PREFIX)}


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
