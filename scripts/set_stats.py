"""Which measure of a picked set moves with the Dice it trains to? (``coldseg.bench.causes``)

    python scripts/set_stats.py docs/results/isic2017_cpu64_validation_nested [--json] [--boot 1000] [--data DIR]

Prints, per folder, the within-(ratio, seed) correlation of Dice with label-free measures of the
picks (cover, density, MMD to the pool, image contrast) and with label-based ones (foreground
fraction, share of small foregrounds), then each strategy's mean measures, then how much of the
foreground fraction each encoder's features carry (cross-validated R^2). Use validation folders to
look for causes; on a test folder this reads test scores.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from coldseg.bench.causes import (FEATURE_STATS, STATS, correlations, encoded_r2, load_folder, markdown,
                                  measure_runs, plot_causes, strategy_means, to_json)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--boot", type=int, default=1000, help="bootstrap resamples (default 1000)")
    ap.add_argument("--json", action="store_true", help="print the correlations as JSON instead")
    ap.add_argument("--figure", type=Path, default=None,
                    help="also draw Dice against density, MMD and foreground per folder (PNG)")
    ap.add_argument("--data", type=Path, default=None,
                    help="the dataset folder, when it is not where settings.json says (a GPU machine's folder)")
    a = ap.parse_args(argv)
    panels = []
    for folder in a.folders:
        try:
            runs, ids, features_of, fg, contrast = load_folder(folder, a.data, missing_features="skip")
            rows = measure_runs(runs, ids, features_of, fg, contrast)
        except ValueError as err:
            print(f"set_stats: {err}", file=sys.stderr)
            return 2
        panels.append((folder.name, rows))
        corrs = correlations(rows, STATS, boot=a.boot)
        if a.json:
            print(to_json(corrs))
            continue
        seeds = sorted({int(r["seed"]) for r in runs})
        encoders = {id(X): X for X in map(features_of, seeds) if X is not None}
        r2 = ", ".join(f"{encoded_r2(X, fg):+.2f}" for X in encoders.values()) or "n/a"
        lacking = [s for s in seeds if features_of(s) is None]
        if lacking:
            print(f"set_stats: {folder / 'features'} lacks the features of seeds {lacking}: their runs' "
                  f"label-free feature measures ({', '.join(FEATURE_STATS)}) are nan", file=sys.stderr)
        print(f"## {folder.name}\n\n{markdown(corrs)}\n\n{strategy_means(rows, STATS)}\n\n"
              f"Foreground fraction from the features (cross-validated ridge R^2, per encoder): {r2}\n")
        conf = confidence_lines(folder, fg, contrast)
        if conf:
            print(conf + "\n")
    if a.figure:
        print(f"figure: {plot_causes(a.figure, panels)}", file=sys.stderr if a.json else sys.stdout)
    return 0


def confidence_lines(folder: Path, fg, contrast) -> str:
    """Where the folder's encoders recorded MoCo's per-image confidence (hard-contrast reads it): how it
    ranks against each image's foreground fraction and contrast, and the foreground of the hardest tenth."""
    out = []
    for path in sorted((folder / "features").glob("*-seed*.confidence.npy")):
        c = np.load(path)
        if c.shape != fg.shape:
            continue
        hard = c <= np.quantile(c, 0.1)
        out.append(f"- {path.name}: median {np.median(c):.4f}; Spearman with foreground "
                   f"{spearmanr(c, fg)[0]:+.2f}, with contrast {spearmanr(c, contrast)[0]:+.2f}; "
                   f"foreground of the least confident tenth "
                   f"{fg[hard].mean():.3f} against {fg.mean():.3f} in the pool")
    return ("MoCo confidence per image (label-based reading):\n" + "\n".join(out)) if out else ""


if __name__ == "__main__":
    raise SystemExit(main())
