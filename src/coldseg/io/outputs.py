"""Writing a run's outputs so that nothing is ever half-written or mixed with an older run.

Every file is first written into a staging folder inside DIR (``.coldseg-staging-*``). Only when all
of them exist does :meth:`OutputDir.commit` swap them in: the old manifest goes first (a folder without
``manifest.json`` is visibly incomplete), then each new file replaces its namesake with an atomic
rename, then files of an older run that this run did not write are removed, and the new manifest
arrives last. On any failure before that, the staging folder is removed and DIR is untouched.
"""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"


class OutputError(OSError):
    """The output folder cannot be created or written."""


class OutputDir:
    def __init__(self, out: str | os.PathLike):
        self.path = Path(out)
        self._created: list[Path] = []  # folders this run made (DIR and missing parents), deepest first
        try:
            if self.path.exists() and not self.path.is_dir():
                raise OutputError(f"output path {str(self.path)!r} exists and is not a folder")
            if not self.path.exists():
                missing = [self.path] + [p for p in self.path.parents if not p.exists()]
                self.path.mkdir(parents=True)
                self._created = [p for p in missing if p.is_dir()]
            self.stage = Path(tempfile.mkdtemp(prefix=".coldseg-staging-", dir=self.path))
        except OutputError:
            raise
        except OSError as e:
            raise OutputError(f"cannot write to output folder {str(self.path)!r}: {e.strerror or e}") from None

    # --- writers (into the staging folder) ---------------------------------------------------------
    def write_bytes(self, name: str, data: bytes) -> Path:
        p = self.stage / name
        p.write_bytes(data)
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

    # --- swap in / abort -----------------------------------------------------------------------------
    def commit(self) -> list[str]:
        """Move every staged file into DIR; returns the names written. The manifest lands last."""
        new = sorted(p.name for p in self.stage.iterdir())
        old = _previous_files(self.path)
        man = self.path / MANIFEST
        if man.exists():
            man.unlink()
        for name in new:
            if name != MANIFEST:
                os.replace(self.stage / name, self.path / name)
        for name in old - set(new):
            target = self.path / name
            if target.is_file() and target.parent == self.path:
                target.unlink()
        if MANIFEST in new:
            os.replace(self.stage / MANIFEST, man)
        shutil.rmtree(self.stage, ignore_errors=True)
        return new

    def abort(self) -> None:
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


def _previous_files(path: Path) -> set[str]:
    """Names an older coldseg run wrote here, read from its manifest (plain names only)."""
    man = path / MANIFEST
    if not man.exists():
        return set()
    try:
        files = json.loads(man.read_text()).get("files", [])
    except (OSError, ValueError):
        return set()
    return {f for f in files if isinstance(f, str) and "/" not in f and "\\" not in f and f not in ("", ".", "..")}


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
