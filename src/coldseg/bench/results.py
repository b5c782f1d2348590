"""What a benchmark leaves on disk, and how it is read back.

An output folder holds:
  settings.json   the settings every run in the folder shares (compared on every rerun) and the
                  sessions (command, start, wall time) that wrote to the folder;
  results.csv     one row per finished run (COLUMNS), appended, flushed and fsynced as each run ends;
  runs.jsonl      one JSON object per finished run: the same key plus the picked image ids, in order
                  (a run redone after a crash appends again: the last record of a key wins);
  iterative_selections.jsonl  picks of iterative strategies, reused when only the final training is missing;
  features/       cached pool features, one file per seed.

A run is identified by (dataset, strategy, ratio, seed); a rerun skips every key already in results.csv.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

COLUMNS = ["dataset", "strategy", "ratio", "n_labeled", "seed", "dice", "hd95", "train_seconds", "device"]
RESULTS = "results.csv"
RUNS = "runs.jsonl"
SETTINGS = "settings.json"
#: the strategy name of the full-label upper bound (ratio 100, every pool image labelled)
FULL = "full"


class SettingsMismatch(ValueError):
    """An output folder already holds runs made with other settings."""


@dataclass(frozen=True)
class RunKey:
    dataset: str
    strategy: str
    ratio: float
    seed: int

    @staticmethod
    def of(row: dict[str, Any]) -> "RunKey":
        return RunKey(str(row["dataset"]), str(row["strategy"]), norm_ratio(row["ratio"]), int(row["seed"]))


def norm_ratio(r: Any) -> float:
    """Ratios compare by value to 1e-6 %, whatever their spelling ('10', '10.0', 10)."""
    return round(float(r), 6)


def fmt_ratio(r: float) -> str:
    return f"{norm_ratio(r):g}"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else str(v)
    return str(v)


class ResultsWriter:
    """Appends rows to results.csv (header on creation); every row is written with one append and
    fsynced at once, so an interrupted sweep loses at most the run in progress. A row that cannot be
    written whole (a full disk) is cut back off, so the file never holds a torn row."""

    def __init__(self, out_dir: str | os.PathLike):
        self.path = Path(out_dir) / RESULTS
        new = not self.path.exists() or self.path.stat().st_size == 0
        if not new:
            _check_header(self.path)
            _ensure_trailing_newline(self.path)
        if new:
            _append_bytes(self.path, _csv_line(COLUMNS), "the header")

    def write(self, row: dict[str, Any]) -> None:
        missing = [c for c in COLUMNS if c not in row]
        if missing:
            raise ValueError(f"result row lacks column(s) {missing}")
        _append_bytes(self.path, _csv_line([_fmt(row[c]) for c in COLUMNS]), "a result row")

    def close(self) -> None:
        pass

    def __enter__(self) -> "ResultsWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _csv_line(fields: list[Any]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n").writerow(fields)   # CRLF, as results.csv files always had
    return buf.getvalue().encode("utf-8")


def _append_bytes(path: Path, data: bytes, what: str) -> None:
    """Append ``data`` to ``path`` whole and fsync it; on failure cut the file back to its old length
    (no torn line) and raise OutputError naming the file ("no space left" for a full disk)."""
    from coldseg.io.outputs import output_error

    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o666)
    try:
        size = os.fstat(fd).st_size
        try:
            view, off = memoryview(data), 0
            while off < len(view):
                off += os.write(fd, view[off:])
            os.fsync(fd)
        except OSError as e:
            try:
                os.ftruncate(fd, size)
            except OSError:
                pass  # readers skip a partial last line anyway
            raise output_error(path.parent, e, f"{what} to {path.name}",
                               hint=f"free some space and rerun the same command to continue (the "
                                    f"lines already in {path.name} are intact)") from e
    finally:
        os.close(fd)


def _check_header(path: Path) -> None:
    with open(path, newline="", encoding="utf-8") as f:
        header = next(csv.reader(f), None)
    if header != COLUMNS:
        raise ValueError(f"{path} has columns {header}, expected {COLUMNS}; it was not written by "
                         "`coldseg benchmark` (use another --out folder)")


def _ensure_trailing_newline(path: Path) -> None:
    """A row cut short by a crash would glue onto the next one: drop a partial last line."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        with open(path, "r+b") as f:
            f.truncate(cut)


def read_results(out_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of results.csv, typed (ratio, dice, hd95, train_seconds float; n_labeled, seed int).

    A partial last line (a crash mid-write) is ignored. A missing file gives an empty list.
    """
    path = Path(out_dir) / RESULTS
    if not path.exists():
        return []
    _check_header(path)
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        text = f.read()
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines = lines[:-1]
    for rec in csv.DictReader(lines):
        rows.append({
            "dataset": rec["dataset"], "strategy": rec["strategy"], "ratio": norm_ratio(rec["ratio"]),
            "n_labeled": int(rec["n_labeled"]), "seed": int(rec["seed"]), "dice": float(rec["dice"]),
            "hd95": float(rec["hd95"]), "train_seconds": float(rec["train_seconds"]), "device": rec["device"],
        })
    return rows


def done_keys(out_dir: str | os.PathLike) -> set[RunKey]:
    return {RunKey.of(r) for r in read_results(out_dir)}


def records_without_result(out_dir: str | os.PathLike) -> set[RunKey]:
    """Runs recorded in runs.jsonl that results.csv lacks. results.csv decides what is done, so these run
    again: one is normal after a kill between the two writes; many mean runs.jsonl was copied or
    edited without results.csv."""
    records = read_jsonl(Path(out_dir) / RUNS)
    return {RunKey.of(r) for r in records} - done_keys(out_dir)


def append_run_record(out_dir: str | os.PathLike, record: dict[str, Any]) -> None:
    """One JSON line in runs.jsonl (picked ids in order, round sizes, selector info)."""
    append_jsonl(Path(out_dir) / RUNS, record)


def append_jsonl(path: str | os.PathLike, record: dict[str, Any]) -> None:
    """Append one JSON line whole, fsynced (cut back off if it cannot be written whole)."""
    path = Path(path)
    _append_bytes(path, (json.dumps(record, default=_json_default) + "\n").encode("utf-8"), "a record")


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Every complete JSON line of ``path`` (a line cut short by a crash is skipped); [] if absent."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def _json_default(o: Any) -> Any:
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    return str(o)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``path`` through a temporary file and a rename; on failure the old file stays and the
    temporary one goes (OutputError naming the folder, "no space left" for a full disk)."""
    from coldseg.io.atomic import atomic_write_bytes
    from coldseg.io.outputs import output_error

    path = Path(path)
    try:
        atomic_write_bytes(path, text.encode("utf-8"))
    except OSError as e:
        raise output_error(path.parent, e, path.name) from e


def read_settings(out_dir: str | os.PathLike) -> dict[str, Any] | None:
    path = Path(out_dir) / SETTINGS
    if not path.exists():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def check_or_write_settings(out_dir: str | os.PathLike, settings: dict[str, Any],
                            legacy: dict[str, Any] | None = None) -> None:
    """Record ``settings`` in a fresh folder, or demand that they equal the recorded ones.

    legacy: top-level values a folder written before those settings were recorded was made with.
    Raises SettingsMismatch naming every differing setting and how to proceed.
    """
    out = Path(out_dir)
    old = read_settings(out)
    settings = json.loads(json.dumps(settings, default=_json_default))  # tuples -> lists, numpy -> python
    if old is None:
        if read_results(out):
            raise SettingsMismatch(f"{out / RESULTS} exists but {out / SETTINGS} does not: the settings of "
                                   "those runs are unknown; choose a fresh --out folder")
        atomic_write_text(out / SETTINGS, json.dumps({"settings": settings, "sessions": []}, indent=1,
                                                     sort_keys=True) + "\n")
        return
    diffs = _diff({**(legacy or {}), **old.get("settings", {})}, settings)
    if diffs:
        lines = "; ".join(f"{k}: folder has {a!r}, this command gives {b!r}" for k, a, b in diffs)
        raise SettingsMismatch(f"{out} holds runs made with other settings ({lines}). Rerun with the "
                               "folder's settings to resume, or choose a fresh --out folder")


def log_session(out_dir: str | os.PathLike, entry: dict[str, Any], *, update_last: bool = False) -> None:
    """Append ``entry`` (command, start time, ...) to the folder's session log, or merge it into the
    last entry (``update_last``: wall time and run counts once the command ends)."""
    out = Path(out_dir)
    record = read_settings(out) or {"settings": {}, "sessions": []}
    sessions = record.setdefault("sessions", [])
    if update_last and sessions:
        sessions[-1].update(entry)
    else:
        sessions.append(entry)
    atomic_write_text(out / SETTINGS, json.dumps(record, indent=1, sort_keys=True, default=_json_default) + "\n")


def _diff(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(dotted key, a's value, b's value) for every differing leaf: 'seg.steps', not all of 'seg'."""
    fa, fb = _flat(a), _flat(b)
    return [(k, fa.get(k), fb.get(k)) for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)]


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def rows_by(rows: Iterable[dict[str, Any]], *fields: str) -> dict[tuple, list[dict[str, Any]]]:
    out: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(tuple(r[f] for f in fields), []).append(r)
    return out
