"""K-means with k-means++ initialisation, and the choice of K by silhouette coefficient."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score


@dataclass
class KChoice:
    k: int                         # the chosen K
    labels: np.ndarray             # (n,) cluster of each row under the chosen K
    centers: np.ndarray            # (k, d)
    silhouette: dict[int, float]   # K -> silhouette coefficient (on a sample when n is large)
    sample_size: int | None        # rows the silhouette was computed on (None: all)


def kmeans(X: np.ndarray, k: int, *, seed: int, n_init: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """K-means (Lloyd, k-means++ init). Returns labels (n,) and centers (k, d)."""
    km = KMeans(n_clusters=k, init="k-means++", n_init=n_init, random_state=seed).fit(X)
    return km.labels_.astype(np.int64), km.cluster_centers_


def choose_k(
    X: np.ndarray, ks: range | list[int], *, seed: int, sample_size: int = 5000, n_init: int = 3
) -> KChoice:
    """Fit K-means for every K in ``ks``; keep the K with the highest silhouette coefficient.

    When n > sample_size the silhouette is estimated on ``sample_size`` rows drawn uniformly with
    ``seed`` (the same rows for every K, so the curve compares like with like). K values that cannot
    be scored (K < 2 or K >= n, or fewer distinct rows than K) are skipped; if none is left, K = 1.
    """
    n = X.shape[0]
    n_distinct = len(np.unique(X, axis=0)) if n <= 200_000 else n
    valid = [k for k in ks if 2 <= k < n and k <= n_distinct]
    if not valid:
        return KChoice(1, np.zeros(n, np.int64), X.mean(axis=0, keepdims=True), {}, None)
    sub = None
    if n > sample_size:
        sub = np.random.default_rng(seed).choice(n, sample_size, replace=False)
    scores: dict[int, float] = {}
    best: tuple[float, int, np.ndarray, np.ndarray] | None = None
    for k in valid:
        labels, centers = kmeans(X, k, seed=seed, n_init=n_init)
        lab_s = labels if sub is None else labels[sub]
        Xs = X if sub is None else X[sub]
        s = float(silhouette_score(Xs, lab_s)) if len(np.unique(lab_s)) > 1 else -1.0
        scores[k] = s
        if best is None or s > best[0]:
            best = (s, k, labels, centers)
    assert best is not None
    return KChoice(best[1], best[2], best[3], scores, None if sub is None else sample_size)
