"""TypiClust, TPCRP variant (Hacohen, Dekel & Weinshall, ICML 2022), from an empty labelled set.

1. K-means into K = |labelled| + budget clusters = budget in the cold start, capped at
   ``max_clusters`` (500, the paper's cap for large budgets) and at the number of distinct rows.
   Plain K-means (k-means++, 3 inits) up to ``minibatch_above`` rows, MiniBatchKMeans beyond (seeded
   by the best of 3 k-means++ seedings of a 12 288-row sample).
2. Repeat ``budget`` times: among clusters that still hold unpicked rows, prefer those with at least
   ``min_cluster_size`` (5) members, as the paper does (small clusters are used only when nothing
   else is left); take the cluster with the fewest picks so far, the largest on ties (then the lower
   index); pick its most typical unpicked member.
3. typicality(x) = 1 / mean distance from x to its k nearest neighbours inside its cluster,
   k = min(20, cluster size - 1). A singleton cluster has typicality 0. Ties: the lower row index.

Typicality never changes as points get picked (it is a property of the cluster), so each cluster's
members are ranked once, on demand, with a chunked brute-force kNN (scikit-learn NearestNeighbors).
"""
from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
from sklearn.cluster import MiniBatchKMeans, kmeans_plusplus
from sklearn.neighbors import NearestNeighbors
from threadpoolctl import threadpool_limits

from coldseg.select.base import Selection, Selector, check_positive_ints
from coldseg.select.kmeans import _assign_numpy, kmeans, n_distinct_rows
from coldseg.select.registry import register


def mean_knn_distance(Xc: np.ndarray, k: int = 20) -> np.ndarray:
    """Mean Euclidean distance of every row of Xc (m, d) to its min(k, m-1) nearest other rows: (m,).

    A row's duplicates count as neighbours at distance 0. With m == 1 the result is [inf].
    """
    m = Xc.shape[0]
    kk = min(k, m - 1)
    if kk == 0:
        return np.full(m, np.inf)
    dist, _ = NearestNeighbors(n_neighbors=kk, algorithm="brute").fit(Xc).kneighbors()  # (m, kk), no self
    return dist.mean(axis=1)


def typicality(Xc: np.ndarray, k: int = 20) -> np.ndarray:
    """1 / mean kNN distance (the paper's definition); 0 for a singleton, 1e12 for exact duplicates."""
    return 1.0 / np.maximum(mean_knn_distance(Xc, k), 1e-12)


@register
class TypiClust(Selector):
    """K-means with K = budget; the most typical member of each of the largest uncovered clusters."""

    name = "typiclust"
    summary = "TypiClust/TPCRP (Hacohen et al. 2022): K = budget clusters, most typical point of each"

    def __init__(
        self, k_nn: int = 20, min_cluster_size: int = 5, max_clusters: int = 500, minibatch_above: int = 20000
    ):
        self.k_nn = k_nn
        self.min_cluster_size = min_cluster_size
        self.max_clusters = max_clusters
        self.minibatch_above = minibatch_above

    def _cluster(self, X: np.ndarray, K: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        if K == 1:
            return np.zeros(X.shape[0], np.int64), X.mean(axis=0, keepdims=True)
        if X.shape[0] <= self.minibatch_above:
            return kmeans(X, K, seed=seed)
        # k-means++ on a float64 sample (scikit-learn's float32 k-means++ is many times slower), best
        # of 3 seedings by inertia on that sample, as MiniBatchKMeans(n_init=3) would choose
        n = X.shape[0]
        S = X[np.sort(np.random.default_rng(seed).choice(n, min(n, max(3 * 4096, 3 * K)), replace=False))]
        S = S.astype(np.float64)
        best = None
        with threadpool_limits(limits=1):  # k-means++ is K small products: threads cost more than they give
            for r in range(3):
                C, _ = kmeans_plusplus(S, K, random_state=(seed + r) % 2**32)
                inertia = float(((S - C[_assign_numpy(S, C)]) ** 2).sum())
                if best is None or inertia < best[0]:
                    best = (inertia, C)
        mb = MiniBatchKMeans(n_clusters=K, init=best[1], n_init=1, random_state=seed, batch_size=4096).fit(X)
        return mb.labels_.astype(np.int64), mb.cluster_centers_.astype(np.float64)

    def _select(self, X: np.ndarray, budget: int, rng: np.random.Generator) -> Selection:
        check_positive_ints(self, "k_nn")

        def score(members: np.ndarray) -> np.ndarray:
            with threadpool_limits(limits=1):  # one small kNN per cluster (see kmeans._SMALL_FIT_THREADS)
                return typicality(X[members], int(self.k_nn))

        sel = self._pick(X, budget, rng, score)
        sel.info["k_nn"] = int(self.k_nn)
        sel.info["typicality"] = sel.info.pop("scores")
        return sel

    def _pick(self, X: np.ndarray, budget: int, rng: np.random.Generator,
              score: Callable[[np.ndarray], np.ndarray]) -> Selection:
        """Steps 1-2 of the module doc, with ``score(members)`` (m,) ranking a cluster's members (highest
        first, ties: lower row index) in place of typicality."""
        check_positive_ints(self, "min_cluster_size", "max_clusters", "minibatch_above")
        seed = int(rng.integers(2**31 - 1))
        distinct = n_distinct_rows(X, min(budget, int(self.max_clusters)))
        K = min(budget, int(self.max_clusters), distinct)
        if K < min(budget, int(self.max_clusters)):
            warnings.warn(
                f"only {distinct} distinct feature rows for {budget} picks: clustering into K={K}",
                stacklevel=3,
            )
        labels, centers = self._cluster(X, K, seed)
        sizes = np.bincount(labels, minlength=K)
        picked = np.zeros(K, dtype=np.int64)
        ranked: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # cluster -> (members by typicality, typ.)
        idx, cl, typ = [], [], []
        big = sizes >= self.min_cluster_size
        for _ in range(budget):
            open_ = sizes > picked
            pool = open_ & big if (open_ & big).any() else open_
            cands = np.flatnonzero(pool)
            c = int(cands[np.lexsort((cands, -sizes[cands], picked[cands]))[0]])
            if c not in ranked:
                members = np.flatnonzero(labels == c)
                t = np.asarray(score(members), dtype=np.float64)
                order = np.lexsort((members, -t))  # highest score first, ties: lower row index
                ranked[c] = (members[order], t[order])
            members, t = ranked[c]
            idx.append(int(members[picked[c]]))
            typ.append(float(t[picked[c]]))
            cl.append(c)
            picked[c] += 1
        idx_a, cl_a = np.asarray(idx, dtype=np.int64), np.asarray(cl, dtype=np.int64)
        info = {
            "k": int(K),
            "min_cluster_size": int(self.min_cluster_size),
            "clusterer": "kmeans" if X.shape[0] <= self.minibatch_above else "minibatch_kmeans",
            "cluster_sizes": sizes.tolist(),
            "picks_per_cluster": picked.tolist(),
            "picks_from_small_clusters": int((~big[cl_a]).sum()),
            "scores": [round(v, 6) for v in typ],
        }
        dist = np.linalg.norm(X[idx_a] - centers[cl_a], axis=1)
        return Selection(idx_a, cl_a, dist, labels=labels, info=info)
