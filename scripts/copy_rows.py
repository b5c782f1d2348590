"""Start a benchmark folder from another one's feature-free rows (``random``, ``full``).

    python scripts/copy_rows.py SRC DST [--strategies random,full] [--set features=moco-backbone]

Runs of ``random`` and ``full`` read no features, so a folder that only changes the features (or the
selector) can reuse them on the same seeds instead of training those U-Nets again. DST must not exist.
The rows go into DST/results.csv and DST/runs.jsonl (the benchmark skips runs found in results.csv);
DST/settings.json gets SRC's settings with the ``--set`` changes and a first session entry naming the
copy, so ``coldseg benchmark ... --out DST`` with the changed settings resumes there and adds the rest.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from coldseg.bench.results import (RESULTS, RUNS, SETTINGS, ResultsWriter, append_jsonl, atomic_write_text, read_jsonl,
                                  read_results, read_settings)


def _value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def copy_rows(src: Path, dst: Path, strategies: set[str], changes: dict[str, object]) -> int:
    record = read_settings(src)
    if record is None or not (src / RESULTS).exists() or not (src / RUNS).exists():
        raise SystemExit(f"{src} is not a benchmark folder ({SETTINGS}, {RESULTS} and {RUNS} are needed)")
    if dst.exists():
        raise SystemExit(f"{dst} exists; choose a new folder")
    settings = dict(record["settings"])
    for key, value in changes.items():
        if key not in settings:
            raise SystemExit(f"--set {key}: not a top-level setting of {src} (it has {sorted(settings)})")
        settings[key] = value
    kept = [r for r in read_results(src) if r["strategy"] in strategies]
    runs = [r for r in read_jsonl(src / RUNS) if r.get("strategy") in strategies]
    if len(runs) != len(kept):
        raise SystemExit(f"{src}: {len(kept)} rows in {RESULTS} but {len(runs)} in {RUNS} for {sorted(strategies)}")
    dst.mkdir(parents=True)
    try:
        with ResultsWriter(dst) as out:  # the benchmark's own writer: same header, quoting, line ends
            for row in kept:
                out.write(row)
        for record in runs:
            append_jsonl(dst / RUNS, record)
        entry = {"command": f"(copied from {src}: its {', '.join(sorted(strategies))} rows; they read no features)",
                 "copied_rows": len(kept)}
        atomic_write_text(dst / SETTINGS, json.dumps({"settings": settings, "sessions": [entry]}, indent=1,
                                                     sort_keys=True) + "\n")
    except BaseException:
        shutil.rmtree(dst, ignore_errors=True)
        raise
    return len(kept)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src", type=Path)
    ap.add_argument("dst", type=Path)
    ap.add_argument("--strategies", default="random,full", help="rows to copy (default: random,full)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="change a top-level setting in DST, e.g. features=moco-backbone (repeatable)")
    a = ap.parse_args(argv)
    changes = {}
    for item in a.set:
        key, sep, value = item.partition("=")
        if not sep:
            ap.error(f"--set {item!r}: expected KEY=VALUE")
        changes[key] = _value(value)
    n = copy_rows(a.src, a.dst, {s for s in a.strategies.split(",") if s}, changes)
    print(f"{a.dst}: {n} rows copied from {a.src}")


if __name__ == "__main__":
    main()
