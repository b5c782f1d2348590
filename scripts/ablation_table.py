"""Print a markdown ablation table from a benchmark folder: each strategy's paired Dice difference to
`random` (matched seeds) per ratio and averaged over ratios, mean and 95 % t-interval over seeds.

A folder made with ``--feature-seeds F`` (seeds sharing an encoder are not independent) gets one more
column: the mean over ratios averaged per encoder first, the interval then taken over the F encoders.

    python scripts/ablation_table.py docs/results/kvasir_seg_cpu64_validation [--ratios 5,10,20]
"""
from __future__ import annotations

import argparse
import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from coldseg.bench.stats import t_interval


def interval(x: np.ndarray) -> str:
    m, lo, hi, n = t_interval(100 * np.asarray(x))
    return f"{m:+.2f}" if n < 2 else f"{m:+.2f} [{lo:+.2f}, {hi:+.2f}]"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder", type=Path)
    ap.add_argument("--ratios", default="5,10,20")
    args = ap.parse_args()
    ratios = [float(r) for r in args.ratios.split(",")]
    dice: dict[str, dict[tuple[float, int], float]] = defaultdict(dict)
    with open(args.folder / "results.csv", newline="") as f:
        for r in csv.DictReader(f):
            dice[r["strategy"]][(float(r["ratio"]), int(r["seed"]))] = float(r["dice"])
    rnd = dice["random"]
    seeds = sorted({s for (_, s) in rnd})
    settings = args.folder / "settings.json"
    encoders = json.loads(settings.read_text())["settings"].get("feature_seeds") if settings.exists() else None
    extra = " mean over ratios (per encoder) |" if encoders else ""
    print("| strategy | " + " | ".join(f"{r:g}%" for r in ratios) + " | mean over ratios (per seed) |" + extra)
    print("|---|" + "---|" * (len(ratios) + 1 + bool(encoders)))
    for name in sorted(dice, key=lambda n: (n != "random", n)):
        if name in ("random", "full"):
            continue
        cells = []
        for r in ratios:
            d = np.array([dice[name][(r, s)] - rnd[(r, s)] for s in seeds if (r, s) in dice[name] and (r, s) in rnd])
            cells.append(interval(d) + f" n={len(d)}" if len(d) else "–")
        full = [s for s in seeds if all((r, s) in dice[name] and (r, s) in rnd for r in ratios)]
        per_seed = np.array([np.mean([dice[name][(r, s)] - rnd[(r, s)] for r in ratios]) for s in full])
        cells.append(interval(per_seed) + f" n={len(per_seed)}" if len(per_seed) else "–")
        if encoders:
            groups = [[d for s, d in zip(full, per_seed) if s % encoders == e] for e in range(encoders)]
            per_enc = np.array([np.mean(g) for g in groups if g])
            cells.append(interval(per_enc) + f" n={len(per_enc)}" if len(per_enc) else "–")
        print(f"| `{name}` | " + " | ".join(cells) + " |")
    print("\nDice points (×100) of strategy − random on matched seeds; [95 % t-interval over seeds"
          + (f"; last column over the {encoders} encoders, seed s using encoder s % {encoders}]." if encoders else "]."))


if __name__ == "__main__":
    main()
