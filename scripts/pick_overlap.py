"""How much do two benchmark folders' picks agree, run for run? (Same seed, same ratio, same strategy.)

Two folders with the same settings and seeds but encoders trained in different sessions pick through
different features; this prints the share of folder A's picks that folder B also picked, per ratio
and over all matched runs (mean, min, max), so the encoder's share of a result's spread can be read.

    python scripts/pick_overlap.py docs/results/kvasir_seg_cpu64_validation_backbone \\
        docs/results/kvasir_seg_cpu64_validation_backbone_candidates --strategy kmedian
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from coldseg.bench import results as R


def picks(folder: Path, strategy: str) -> dict[tuple[float, int], set[str]]:
    """(ratio, seed) -> picked ids of ``strategy`` in ``folder``'s runs.jsonl."""
    path = folder / R.RUNS
    if not path.exists():
        raise SystemExit(f"pick_overlap: {path} does not exist; give a benchmark result folder "
                         "(one made by `coldseg benchmark`)")
    return {(R.norm_ratio(r["ratio"]), int(r["seed"])): set(r["ids"])
            for r in R.read_jsonl(path) if r.get("strategy") == strategy and "ids" in r}


def overlaps(a: dict, b: dict) -> dict[tuple[float, int], float]:
    """Share of A's picks that B also has, for every (ratio, seed) both folders ran."""
    return {k: len(a[k] & b[k]) / len(a[k]) for k in sorted(a.keys() & b.keys()) if a[k]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--strategy", default="kmedian", help="whose picks to compare (default kmedian)")
    args = ap.parse_args(argv)
    ov = overlaps(picks(args.a, args.strategy), picks(args.b, args.strategy))
    if not ov:
        raise SystemExit(f"pick_overlap: no `{args.strategy}` run has the same ratio and seed in "
                         f"{args.a} and {args.b}")
    print("| ratio | runs | mean overlap | min | max |\n|---|---|---|---|---|")
    groups = {r: [v for (q, _), v in ov.items() if q == r] for r in sorted({q for q, _ in ov})}
    groups["all"] = list(ov.values())
    for name, vals in groups.items():
        label = name if name == "all" else f"{R.fmt_ratio(name)}%"
        v = 100 * np.asarray(vals)
        print(f"| {label} | {len(v)} | {v.mean():.1f} % | {v.min():.0f} % | {v.max():.0f} % |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
