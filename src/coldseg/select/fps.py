"""Farthest point sampling (greedy k-center), in O(n) memory."""
from __future__ import annotations

import numpy as np

_CHUNK = 65536


def _sq_dist_to(X: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Squared Euclidean distance of every row of X (n, d) to x (d,), chunked: (n,)."""
    out = np.empty(X.shape[0], dtype=np.float64)
    for s in range(0, X.shape[0], _CHUNK):
        diff = X[s : s + _CHUNK] - x  # (c, d)
        out[s : s + _CHUNK] = np.einsum("ij,ij->i", diff, diff)
    return out


def farthest_point_sampling(
    X: np.ndarray, n_samples: int, *, start: int | None = None, min_dist: np.ndarray | None = None
) -> np.ndarray:
    """Greedy farthest point sampling.

    Each step picks the row farthest (Euclidean) from everything picked so far.

    X:          (n, d) features.
    n_samples:  how many rows to pick, 0 <= n_samples <= n.
    start:      the first pick. Default: the row farthest from the mean of X (the paper's released
                code). Ignored when ``min_dist`` is given.
    min_dist:   (n,) squared distances to an already-chosen set (k-center greedy from a labelled set);
                the first pick is then its argmax.
    Returns (n_samples,) int64 indices in pick order. Ties break towards the lowest index.
    """
    X = np.asarray(X, dtype=np.float64)
    n = X.shape[0]
    if not 0 <= n_samples <= n:
        raise ValueError(f"n_samples={n_samples} must lie in [0, {n}]")
    picks = np.empty(n_samples, dtype=np.int64)
    if n_samples == 0:
        return picks
    if min_dist is None:
        if start is None:
            start = int(np.argmax(_sq_dist_to(X, X.mean(axis=0))))
        d = np.full(n, np.inf)
        nxt = int(start)
    else:
        d = np.asarray(min_dist, dtype=np.float64).copy()
        nxt = int(np.argmax(d))
    for i in range(n_samples):
        picks[i] = nxt
        d = np.minimum(d, _sq_dist_to(X, X[nxt]))
        d[picks[: i + 1]] = -1.0  # never re-pick, even among exact duplicates
        nxt = int(np.argmax(d))
    return picks
