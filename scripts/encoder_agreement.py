"""Do MoCo encoders trained on one pool agree, and does a selector's pick follow that agreement?

Reads two or more cached feature files of the *same* pool (rows in the same order, e.g. a benchmark
folder's ``features/moco-backbone-seed<f>.npy``; ``FOLDER:F`` is short for that file) and prints, as
Markdown:

1. for every pair of encoders: how much of each image's 10 nearest neighbours the two share, and the
   correlation of their pairwise cosine similarities (the geometry the selectors read);
2. for every ratio: how many of one encoder's picks the other encoder's picks share (image level), and
   how many of one encoder's picks have some pick of the other among their 10 nearest neighbours
   (neighbourhood level), each beside what two random sets of that size give;
3. the same two overlaps for two *ensembles* (the first half of the files side by side against the
   second half), which says whether averaging encoders would make the picks reproducible.

    python scripts/encoder_agreement.py docs/results/kvasir_seg_cpu64_validation_backbone_e21:0 \\
        docs/results/kvasir_seg_cpu64_validation_backbone_e21:1 docs/results/kvasir_seg_cpu64_validation_noeq7:0 \\
        --strategy herding --ratios 5,10,20

Label-free: no mask and no Dice is read.
"""
from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

K_NN = 10


def load(spec: str, kind: str = "moco-backbone") -> np.ndarray:
    """``FOLDER:F`` (a benchmark folder and feature seed) or a .npy path -> unit rows (n, d), float64."""
    folder, sep, f = spec.rpartition(":")
    path = Path(folder) / "features" / f"{kind}-seed{f}.npy" if sep and f.isdigit() else Path(spec)
    if not path.is_file():
        raise SystemExit(f"encoder_agreement: {path} does not exist (give FOLDER:SEED or a .npy file)")
    X = np.load(path).astype(np.float64)
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def neighbours(X: np.ndarray, k: int = K_NN) -> np.ndarray:
    """(n, k) indices of each row's k nearest other rows by cosine similarity (rows unit)."""
    S = X @ X.T
    np.fill_diagonal(S, -np.inf)
    return np.argsort(-S, axis=1, kind="stable")[:, :k]


def knn_overlap(na: np.ndarray, nb: np.ndarray) -> float:
    """Mean share of an image's k nearest neighbours under A that are also among them under B."""
    k = na.shape[1]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(na, nb)]))


def similarity_corr(A: np.ndarray, B: np.ndarray) -> float:
    """Pearson r of the two encoders' pairwise cosine similarities (upper triangle)."""
    iu = np.triu_indices(len(A), 1)
    return float(np.corrcoef((A @ A.T)[iu], (B @ B.T)[iu])[0, 1])


def pick_overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Share of A's picks that B also picked."""
    return len(set(a.tolist()) & set(b.tolist())) / len(a)


def near_overlap(a: np.ndarray, b: np.ndarray, nbrs: np.ndarray) -> float:
    """Share of A's picks that are a pick of B or have one among their nearest neighbours (``nbrs``)."""
    bset = set(b.tolist())
    return float(np.mean([i in bset or bool(bset.intersection(nbrs[i].tolist())) for i in a]))


def random_reference(n: int, size: int, nbrs: np.ndarray, draws: int, rng: np.random.Generator) -> tuple[float, float]:
    """(pick overlap, near overlap) of two independent random sets of ``size``, averaged over ``draws``."""
    vals = []
    for _ in range(draws):
        a, b = rng.choice(n, size, replace=False), rng.choice(n, size, replace=False)
        vals.append((pick_overlap(a, b), near_overlap(a, b, nbrs)))
    return tuple(np.mean(vals, axis=0))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("features", nargs="+", help="FOLDER:SEED or .npy, at least two, same pool and row order")
    ap.add_argument("--strategy", default="herding")
    ap.add_argument("--ratios", default="5,10,20", help="percent of the pool (default 5,10,20)")
    ap.add_argument("--kind", default="moco-backbone", help="feature file prefix inside FOLDER/features")
    ap.add_argument("--seed", type=int, default=0, help="the selector's random_state (default 0)")
    ap.add_argument("--draws", type=int, default=50, help="random pairs for the reference (default 50)")
    args = ap.parse_args(argv)
    if len(args.features) < 2:
        ap.error("give at least two feature files")
    from coldseg.select.registry import get_selector

    F = [load(s, args.kind) for s in args.features]
    n = len(F[0])
    if any(len(X) != n for X in F):
        raise SystemExit(f"encoder_agreement: the files hold {[len(X) for X in F]} rows; they must describe one pool")
    nbrs = [neighbours(X) for X in F]
    pairs = list(itertools.combinations(range(len(F)), 2))
    print(f"{len(F)} encoders, {n} images; encoder i = argument i\n")
    print(f"| encoders | shared {K_NN}-NN (chance {K_NN / (n - 1):.3f}) | similarity r |\n|---|---|---|")
    for i, j in pairs:
        print(f"| {i} – {j} | {knn_overlap(nbrs[i], nbrs[j]):.3f} | {similarity_corr(F[i], F[j]):.3f} |")

    ensembles = None
    if len(F) >= 4:
        h = len(F) // 2
        E = [np.hstack(F[:h]) / np.sqrt(h), np.hstack(F[h:2 * h]) / np.sqrt(h)]
        ensembles = (E, neighbours(E[0]))
    sel = get_selector(args.strategy)
    rng = np.random.default_rng(args.seed)
    print(f"\n`{args.strategy}` picks, encoder pairs (mean [min, max]) | ensembles of {len(F) // 2} "
          "(first half vs second half) | two random sets\n")
    print("| ratio | picks shared | picks with a neighbour picked | ensembles: shared | ensembles: neighbour "
          "| random: shared | random: neighbour |\n|---|---|---|---|---|---|---|")
    for pct in (float(r) for r in args.ratios.split(",")):
        size = max(1, round(pct / 100 * n))
        P = [sel.select(X, size, random_state=args.seed).indices for X in F]
        shared = [pick_overlap(P[i], P[j]) for i, j in pairs]
        near = [near_overlap(P[i], P[j], nbrs[i]) for i, j in pairs]
        ens = ["n/a (needs 4 files)"] * 2
        if ensembles is not None:
            (E, en) = ensembles
            Q = [sel.select(X, size, random_state=args.seed).indices for X in E]
            ens = [f"{pick_overlap(Q[0], Q[1]):.3f}", f"{near_overlap(Q[0], Q[1], en):.3f}"]
        ref = random_reference(n, size, nbrs[0], args.draws, rng)
        cell = lambda v: f"{np.mean(v):.3f} [{min(v):.3f}, {max(v):.3f}]"   # noqa: E731
        print(f"| {pct:g} % ({size}) | {cell(shared)} | {cell(near)} | {ens[0]} | {ens[1]} | {ref[0]:.3f} | {ref[1]:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
