"""Do a strategy's picks lean to the first file names? (A tie-break by row index would make them.)

The pool is sorted by image id, so a selector that breaks ties towards the lower row index picks the
first names; file names often follow acquisition order, source or place (Dubai's "Tile1…" tiles are
one area), so such a lean is a bias, not noise. For every strategy in each benchmark folder this
prints the mean normalised name rank of its picks (0 = first name of the pool, 1 = last; an unbiased
pick gives about 0.5) and the share of its picks among the first ``--first`` fraction of names (about
``--first`` when unbiased). The pool is the ``full`` run's images when the folder has one, else every
image any run picked.

    python scripts/name_order_bias.py docs/results/kvasir_seg_cpu64_validation_backbone_candidates [...]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from coldseg.bench import results as R


def name_ranks(records: list[dict]) -> dict[str, float]:
    """Image id -> normalised rank in the sorted pool (0..1)."""
    full = [r for r in records if r.get("strategy") == "full" and r.get("ids")]
    pool = sorted(set(full[0]["ids"]) if full else {i for r in records for i in r.get("ids", [])})
    if len(pool) < 2:
        raise SystemExit("name_order_bias: fewer than 2 images in the runs; nothing to rank")
    return {k: j / (len(pool) - 1) for j, k in enumerate(pool)}


def bias(records: list[dict], first: float) -> dict[str, tuple[int, float, float]]:
    """strategy -> (runs, mean name rank of its picks, share of picks in the first ``first`` of names)."""
    pos = name_ranks(records)
    per: dict[str, list[tuple[float, float]]] = {}
    for r in records:
        if r.get("strategy") in (None, "full") or not r.get("ids"):
            continue
        q = np.array([pos[i] for i in r["ids"] if i in pos])
        if len(q):
            per.setdefault(r["strategy"], []).append((float(q.mean()), float((q < first).mean())))
    return {s: (len(v), float(np.mean([a for a, _ in v])), float(np.mean([b for _, b in v])))
            for s, v in sorted(per.items())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", type=Path, nargs="+")
    ap.add_argument("--first", type=float, default=0.1, help="fraction of the sorted names (default 0.1)")
    a = ap.parse_args(argv)
    print(f"| folder | strategy | runs | mean name rank (0.5 = none) | share in first {a.first:.0%} of names |")
    print("|---|---|---|---|---|")
    for folder in a.folders:
        path = folder / R.RUNS
        if not path.exists():
            raise SystemExit(f"name_order_bias: {path} does not exist; give a benchmark result folder")
        for s, (n, rank, share) in bias(R.read_jsonl(path), a.first).items():
            print(f"| {folder.name} | `{s}` | {n} | {rank:.3f} | {share:.1%} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
