"""K-median, the one-shot clustering baseline of the CA paper: one medoid-like pick per cluster.

1. K = budget clusters. Seeding is k-means++ style for the L1 objective ("k-median++"): the first
   centre is a uniform draw, each next one is drawn with probability proportional to its L1 distance
   to the nearest centre so far (D^1 sampling, the k-median analogue of k-means++'s D^2).
2. Lloyd iterations for the K-median objective sum_i ||x_i - c_(i)||_1: assign every row to the
   nearest centre in L1, then move each centre to the coordinate-wise median of its members (which
   minimises the summed L1 distance of the cluster). Empty clusters keep their centre. Stops when no
   assignment changes, or after ``max_iter`` rounds. O(n·K·d) per round, chunked (no n×n matrix).
3. Pick, per cluster, the member closest **in L1** to the final centre (the metric of the objective;
   ties towards the lowest index). Picks are unique because a row belongs to one cluster. Clusters are
   listed largest first, so a prefix of the list covers the big modes first.
4. Clusters that end empty (duplicate rows, or seeds that lost all their members) leave the list short;
   it is filled with the remaining rows farthest from the picks (k-center greedy), so the list always
   holds exactly ``budget`` rows.

``Selection.distances`` are Euclidean distances to the cluster's median centre, as the contract asks.
"""
from __future__ import annotations

import numpy as np
from scipy.spatial.distance import cdist

from coldseg.select.base import Selection, Selector
from coldseg.select.kcenter import pad_by_k_center
from coldseg.select.registry import register

_CELLS = 1 << 22  # rows × centres per distance block (32 MiB of float64)


def l1_assign(X: np.ndarray, C: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centre in L1 for every row. X (n, d), C (K, d) -> labels (n,) int64, L1 distance (n,)."""
    n, K = X.shape[0], C.shape[0]
    labels = np.empty(n, dtype=np.int64)
    dist = np.empty(n, dtype=np.float64)
    step = max(1, _CELLS // K)
    for s in range(0, n, step):
        D = cdist(X[s : s + step], C, metric="cityblock")  # (c, K)
        lab = np.argmin(D, axis=1)  # ties -> lowest centre index
        labels[s : s + step] = lab
        dist[s : s + step] = D[np.arange(len(lab)), lab]
    return labels, dist


def _l1_to(X: np.ndarray, x: np.ndarray) -> np.ndarray:
    """L1 distance of every row of X (n, d) to x (d,): (n,)."""
    return cdist(X, x[None, :], metric="cityblock")[:, 0]


def kmedian_pp_seeds(X: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k rows of X drawn by D^1 sampling (k-means++ with L1 distances). Returns (k,) unique indices."""
    n = X.shape[0]
    seeds = np.empty(k, dtype=np.int64)
    seeds[0] = rng.integers(n)
    d = _l1_to(X, X[seeds[0]])  # (n,) L1 distance to the nearest seed
    taken = np.zeros(n, dtype=bool)
    taken[seeds[0]] = True
    for j in range(1, k):
        w = np.where(taken, 0.0, d)
        total = w.sum()
        if total > 0:
            c = int(np.searchsorted(np.cumsum(w), rng.random() * total, side="right"))
            c = min(c, n - 1)
        else:  # every untaken row duplicates a seed: draw uniformly among them
            c = int(rng.choice(np.flatnonzero(~taken)))
        seeds[j] = c
        taken[c] = True
        d = np.minimum(d, _l1_to(X, X[c]))
    return seeds


def group_members(labels: np.ndarray, k: int) -> list[np.ndarray]:
    """Row indices of each cluster 0..k-1 (ascending), in O(n log n)."""
    order = np.argsort(labels, kind="stable")
    bounds = np.cumsum(np.bincount(labels, minlength=k))
    return np.split(order, bounds[:-1])


def kmedian(
    X: np.ndarray, k: int, rng: np.random.Generator, *, max_iter: int = 50
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, bool]:
    """Lloyd-style K-median. Returns labels (n,), L1 distance to own centre (n,), centres (k, d),
    the number of update rounds run, and whether the assignment converged."""
    C = X[kmedian_pp_seeds(X, k, rng)].copy()  # (k, d)
    labels, dist = l1_assign(X, C)
    converged, rounds = False, 0
    for rounds in range(1, max_iter + 1):
        for c, members in enumerate(group_members(labels, k)):
            if len(members):
                C[c] = np.median(X[members], axis=0)
        new, dist = l1_assign(X, C)
        if np.array_equal(new, labels):
            converged = True
            break
        labels = new
    return labels, dist, C, rounds, converged


@register
class KMedian(Selector):
    """K = budget L1 clusters (median Lloyd, D^1 seeding); the member nearest each centre."""

    name = "kmedian"
    summary = "K-median (K = budget, L1, median Lloyd), the member nearest each centre"

    def __init__(self, max_iter: int = 50):
        self.max_iter = max_iter

    def _select(self, X: np.ndarray, budget: int, rng: np.random.Generator) -> Selection:
        if not isinstance(self.max_iter, (int, np.integer)) or self.max_iter < 1:
            raise ValueError(f"max_iter={self.max_iter!r} must be a positive integer")
        K = budget
        labels, dist, C, rounds, converged = kmedian(X, K, rng, max_iter=int(self.max_iter))
        sizes = np.bincount(labels, minlength=K)
        groups = group_members(labels, K)
        picks = []
        for c in np.lexsort((np.arange(K), -sizes)):  # largest cluster first, ties: lower index
            if sizes[c]:
                members = groups[c]
                picks.append(members[np.argmin(dist[members])])
        n_empty = int((sizes == 0).sum())
        idx = pad_by_k_center(X, np.asarray(picks, dtype=np.int64), budget)
        cl = labels[idx]
        info = {
            "k": int(K),
            "pick_metric": "l1",
            "n_iter": int(rounds),
            "converged": bool(converged),
            "objective_l1": float(dist.sum()),
            "cluster_sizes": sizes.tolist(),
            "n_empty_clusters_filled": n_empty,
        }
        return Selection(idx, cl, np.linalg.norm(X[idx] - C[cl], axis=1), labels=labels, info=info)
