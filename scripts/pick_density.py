"""Where in feature space does each strategy pick? A label-free look at a pool's features.

For each features file (rows = pool images), strategy and budget, prints one markdown row:

- ``density rank``: mean percentile (0 = sparsest, 1 = densest) of the picks' typicality, typicality =
  1 / mean distance to the ``--k`` nearest other rows of the unit-normalised features (TypiClust's
  ``typicality``, Hacohen et al. 2022). A uniform random
  draw averages 0.5; below it, the picks lean to the sparse fringe, above it to dense modes.
- ``cover``: mean Euclidean distance (unit-normalised features) from every pool row to its nearest
  pick (a K-median-style objective): lower means the pool is better represented by the picks.

    python scripts/pick_density.py docs/results/kvasir_seg_cpu64_validation_nested/features/moco-seed*.npy \\
        --strategies random,ca,ca-typical,kmedian,typiclust,probcover --ratios 5,10,20

The seed of every selection is the index of its features file (0, 1, ...), as in a benchmark folder.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from coldseg.bench.causes import FeatureMeasures
from coldseg.data.splits import subset_size
from coldseg.select.registry import get_selector


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("features", nargs="+", type=Path)
    ap.add_argument("--strategies", default="random,ca,ca-typical,kmedian")
    ap.add_argument("--ratios", default="5,10,20")
    ap.add_argument("--k", type=int, default=20, help="neighbours for typicality (default 20)")
    a = ap.parse_args()
    names = [s for s in a.strategies.split(",") if s]
    ratios = [float(r) for r in a.ratios.split(",")]
    print("| strategy | " + " | ".join(f"{r:g}%: density rank / cover" for r in ratios) + " |")
    print("|---|" + "---|" * len(ratios))
    stats: dict[str, list[list[tuple[float, float]]]] = {n: [[] for _ in ratios] for n in names}
    for seed, path in enumerate(a.features):
        X = np.load(path).astype(np.float32)
        measure = FeatureMeasures(X, k=a.k)          # density rank and cover on unit-normalised rows
        for j, r in enumerate(ratios):
            n = subset_size(r, len(X))
            for name in names:
                m = measure(get_selector(name).select(X, n, random_state=seed).indices)
                stats[name][j].append((m["density"], m["cover"]))
    for name in names:
        cells = []
        for per in stats[name]:
            d, c = np.array(per).T
            cells.append(f"{d.mean():.2f} ({d.min():.2f}–{d.max():.2f}) / {c.mean():.3f}")
        print(f"| `{name}` | " + " | ".join(cells) + " |")
    print(f"\nMean over {len(a.features)} features file(s) (range in brackets); density rank of a uniform draw: 0.5.")


if __name__ == "__main__":
    main()
