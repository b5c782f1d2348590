"""Print a markdown ablation table from a benchmark folder: each strategy's paired Dice difference to
`random` (matched seeds) per ratio and averaged over ratios, mean and 95 % t-interval over seeds.

A folder made with ``--feature-seeds F`` (seeds sharing an encoder are not independent) gets one more
column: the mean over ratios averaged per encoder first, the interval then taken over the F encoders,
then each encoder's own mean in brackets, encoder 0 first.

    python scripts/ablation_table.py docs/results/kvasir_seg_cpu64_validation [--ratios 5,10,20]

``--with OTHER:LABEL`` adds another folder's strategies as ``name (LABEL)``, paired by seed (the two
folders' shared runs, such as copied ``random`` rows, must agree); ``--baseline NAME`` takes the
differences to that strategy instead of ``random``, e.g. the same selector on two kinds of features:

    python scripts/ablation_table.py docs/results/isic2017_cpu64_validation_backbone \
        --with docs/results/isic2017_cpu64_validation_hardcontrast:head --baseline "kmedian (head)"

``--pool OTHER`` averages each strategy's Dice over this folder and OTHER on matched (ratio, seed)
before differencing, for a strategy run on two sets of encoders with the same seeds and the same
``random`` runs (copied rows): the encoder sets become replicates inside each seed, the unit stays
the seed. Only strategies present in every pooled folder are shown, each over the cells all have.
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


def read_dice(folder: Path) -> dict[str, dict[tuple[float, int], float]]:
    """{strategy: {(ratio, seed): dice}} of a benchmark folder's results.csv."""
    dice: dict[str, dict[tuple[float, int], float]] = defaultdict(dict)
    if not (folder / "results.csv").is_file():
        raise SystemExit(f"{folder}: no results.csv; give a folder written by `coldseg benchmark --out`")
    with open(folder / "results.csv", newline="") as f:
        for r in csv.DictReader(f):
            dice[r["strategy"]][(float(r["ratio"]), int(r["seed"]))] = float(r["dice"])
    return dice


def _check_shared(name: str, cells: dict, mine: dict, folder, main_folder) -> None:
    """Copied random/full runs must be the very same runs in both folders."""
    clash = [k for k, v in cells.items() if k in mine and mine[k] != v]
    if clash:
        raise SystemExit(f"{folder}: its {name} runs differ from {main_folder}'s at (ratio, seed) "
                         f"{clash[:3]}: the folders are not paired")


def pool(dice: dict, folders: list[Path], main_folder: Path) -> list[str]:
    """Average every strategy's Dice over ``dice`` and ``folders`` on the (ratio, seed) cells all of them
    hold; strategies missing from one of them are dropped. Returns the pooled strategy names."""
    others = [read_dice(f) for f in folders]
    for f, o in zip(folders, others):
        for name in ("random", "full"):
            _check_shared(name, o.get(name, {}), dice.get(name, {}), f, main_folder)
    pooled = []
    for name in list(dice):
        if name in ("random", "full"):
            continue
        if not all(name in o for o in others):
            del dice[name]
            continue
        keys = set(dice[name]).intersection(*(o[name] for o in others))
        dice[name] = {k: float(np.mean([dice[name][k]] + [o[name][k] for o in others])) for k in keys}
        pooled.append(name)
    return pooled


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder", type=Path)
    ap.add_argument("--ratios", default="5,10,20")
    ap.add_argument("--with", dest="others", action="append", default=[], metavar="FOLDER:LABEL",
                    help="add FOLDER's strategies as 'name (LABEL)' (repeatable)")
    ap.add_argument("--baseline", default="random", help="differences to this strategy (default random)")
    ap.add_argument("--pool", action="append", default=[], type=Path, metavar="FOLDER",
                    help="average each strategy over this folder too, on matched seeds (repeatable)")
    args = ap.parse_args()
    ratios = [float(r) for r in args.ratios.split(",")]
    dice = read_dice(args.folder)
    pooled = pool(dice, args.pool, args.folder) if args.pool else []
    for spec in args.others:
        folder, _, label = spec.rpartition(":")
        if not folder or not label:
            ap.error(f"--with {spec!r}: give FOLDER:LABEL")
        for name, cells in read_dice(Path(folder)).items():
            if name in ("random", "full"):   # shared runs: must be the same runs, then nothing to add
                _check_shared(name, cells, dice[name], folder, args.folder)
                continue
            dice[f"{name} ({label})"] = cells
    if args.baseline not in dice:
        raise SystemExit(f"--baseline {args.baseline!r}: no such strategy; have {', '.join(sorted(dice))}")
    rnd = dice[args.baseline]
    seeds = sorted({s for (_, s) in rnd})
    settings = args.folder / "settings.json"
    encoders = json.loads(settings.read_text())["settings"].get("feature_seeds") if settings.exists() else None
    extra = " mean over ratios (per encoder) |" if encoders else ""
    print("| strategy | " + " | ".join(f"{r:g}%" for r in ratios) + " | mean over ratios (per seed) |" + extra)
    print("|---|" + "---|" * (len(ratios) + 1 + bool(encoders)))
    for name in sorted(dice, key=lambda n: (n != "random", n)):
        if name in ("full", args.baseline):
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
            each = ", ".join(f"{100 * m:+.2f}" for m in per_enc)     # one mean per encoder, in encoder order
            cells.append(interval(per_enc) + f" n={len(per_enc)} ({each})" if len(per_enc) else "–")
        print(f"| `{name}` | " + " | ".join(cells) + " |")
    print(f"\nDice points (×100) of strategy − {args.baseline} on matched seeds; [95 % t-interval over seeds"
          + (f"; last column over the {encoders} encoders, seed s using encoder s % {encoders}]." if encoders else "]."))
    if pooled:
        print(f"Pooled: {', '.join(pooled)} averaged per (ratio, seed) over {1 + len(args.pool)} folders "
              f"({', '.join(str(f) for f in [args.folder, *args.pool])}); the per-encoder column counts this "
              "folder's encoder index, each entry now averaging one encoder of every folder.")


if __name__ == "__main__":
    main()
