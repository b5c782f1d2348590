"""Start a benchmark folder from another one's feature-free rows (``random``, ``full``).

    python scripts/copy_rows.py SRC DST [--strategies random,full] [--set features=moco-backbone] [--add ssl_candidates=none]
        [--drop ssl_batch_size]

Runs of ``random`` and ``full`` read no features, so a folder that only changes the features (or the
selector) can reuse them on the same seeds instead of training those U-Nets again. DST must not exist.
The rows go into DST/results.csv and DST/runs.jsonl (the benchmark skips runs found in results.csv);
DST/settings.json gets SRC's settings with the ``--set`` changes (``--add`` for a setting SRC lacks, such as
one recorded only when not the default; ``--drop`` for one DST's features do not record, such as the MoCo
schedule beside ``--set features=pixels``) and a first session entry naming the
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


def copy_rows(src: Path, dst: Path, strategies: set[str], changes: dict[str, object],
              additions: dict[str, object] | None = None, drops: list[str] | None = None) -> int:
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
    for key, value in (additions or {}).items():
        if key in settings:
            raise SystemExit(f"--add {key}: {src} already has it ({settings[key]!r}); use --set to change it")
        settings[key] = value
    for key in drops or []:
        if key not in settings:
            raise SystemExit(f"--drop {key}: not a top-level setting of {src} (it has {sorted(settings)})")
        del settings[key]
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
    ap.add_argument("--add", action="append", default=[], metavar="KEY=VALUE",
                    help="add a top-level setting SRC lacks, e.g. ssl_candidates=none (repeatable)")
    ap.add_argument("--drop", action="append", default=[], metavar="KEY",
                    help="leave out a top-level setting DST's features do not record, e.g. ssl_min_steps "
                         "beside --set features=pixels (repeatable)")
    a = ap.parse_args(argv)

    def pairs(flag: str, items: list[str]) -> dict[str, object]:
        out = {}
        for item in items:
            key, sep, value = item.partition("=")
            if not sep:
                ap.error(f"{flag} {item!r}: expected KEY=VALUE")
            out[key] = _value(value)
        return out

    n = copy_rows(a.src, a.dst, {s for s in a.strategies.split(",") if s}, pairs("--set", a.set),
                  pairs("--add", a.add), a.drop)
    print(f"{a.dst}: {n} rows copied from {a.src}")


if __name__ == "__main__":
    main()
