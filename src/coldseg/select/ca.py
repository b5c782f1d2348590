"""The paper's query strategy, Contrastive Annotation (CA), Jin et al. 2022, section 3.3.

1. K-means (k-means++ init) for every K in [k_min, k_max]; keep the K with the best silhouette.
   On large pools the sweep runs on a sample and the silhouette is a stratified estimate; only the
   chosen K is refined on every row (:mod:`coldseg.select.kmeans`, :mod:`coldseg.select.silhouette`).
2. Split the budget equally across the K clusters (:func:`split_budget`, exact, no overshoot).
3. Inside each cluster, farthest point sampling picks its share, starting from the member farthest
   from the cluster mean (as in the authors' released code).
4. The annotation list interleaves clusters round-robin (every cluster's 1st pick, then every
   cluster's 2nd, ...), so any prefix of the list is itself spread over the clusters.
"""
from __future__ import annotations

import warnings

import numpy as np

from coldseg.select.base import Selection, Selector
from coldseg.select.fps import farthest_point_sampling
from coldseg.select.kmeans import choose_k
from coldseg.select.registry import register


def split_budget(sizes: np.ndarray | list[int], budget: int) -> np.ndarray:
    """Split ``budget`` picks equally over clusters of the given ``sizes``, exactly.

    Rule (water-filling): every cluster that still has unpicked members gets an equal share
    ``remaining // open_clusters``, capped at its size; what a small cluster cannot take goes back to
    the pool and is shared again among the others. When the remainder is smaller than the number of
    open clusters, one extra pick goes to each of the clusters with the most unpicked members (ties:
    lower cluster index). The result sums to ``budget`` exactly and never exceeds a cluster's size.

    >>> split_budget([2, 10, 10], 12).tolist()
    [2, 5, 5]
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    if budget > sizes.sum():
        raise ValueError(f"budget={budget} exceeds the {int(sizes.sum())} items in the clusters")
    quota = np.zeros_like(sizes)
    remaining = int(budget)
    while remaining > 0:
        room = sizes - quota
        open_ = np.flatnonzero(room > 0)
        share = remaining // len(open_)
        if share == 0:
            order = open_[np.lexsort((open_, -room[open_]))]  # most room first, then index
            quota[order[:remaining]] += 1
            break
        add = np.minimum(room[open_], share)
        quota[open_] += add
        remaining -= int(add.sum())
    return quota


def interleave(groups: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Round-robin merge of per-cluster pick lists. Returns (indices, cluster of each)."""
    idx, cl = [], []
    for r in range(max((len(g) for g in groups), default=0)):
        for c, g in enumerate(groups):
            if r < len(g):
                idx.append(g[r])
                cl.append(c)
    return np.asarray(idx, dtype=np.int64), np.asarray(cl, dtype=np.int64)


@register
class ContrastiveAnnotation(Selector):
    """K-means++ with silhouette-chosen K, then farthest point sampling inside each cluster."""

    name = "ca"
    summary = "the paper: k-means++ (K by silhouette), equal split, FPS from the farthest point"

    def __init__(self, k_min: int = 2, k_max: int = 20, silhouette_sample: int = 5000, n_init: int = 3):
        self.k_min = k_min
        self.k_max = k_max
        self.silhouette_sample = silhouette_sample
        self.n_init = n_init

    def _select(self, X: np.ndarray, budget: int, rng: np.random.Generator) -> Selection:
        seed = int(rng.integers(2**31 - 1))
        k_hi = min(self.k_max, budget)  # more clusters than picks would leave clusters unpicked
        choice = choose_k(
            X, range(self.k_min, k_hi + 1), seed=seed, sample_size=self.silhouette_sample, n_init=self.n_init
        )
        K, labels, centers = choice.k, choice.labels, choice.centers
        members = [np.flatnonzero(labels == c) for c in range(K)]
        sizes = np.array([len(m) for m in members])
        quota = split_budget(sizes, budget)
        small = [c for c in range(K) if sizes[c] < budget // K]
        if small:
            warnings.warn(
                f"{len(small)} cluster(s) hold fewer images than the equal share of {budget // K}; "
                "their remainder went to the other clusters",
                stacklevel=3,
            )
        groups = []
        for c in range(K):
            local = farthest_point_sampling(X[members[c]], int(quota[c]))  # starts farthest from the mean
            groups.append(members[c][local])
        idx, cl = interleave(groups)
        dist = np.linalg.norm(X[idx] - centers[cl], axis=1)
        info = {
            "k": int(K),
            "k_range": [int(self.k_min), int(k_hi)],
            "silhouette": {str(k): round(v, 6) for k, v in choice.silhouette.items()},
            "silhouette_sample_size": choice.sample_size,
            "kmeans_fit_sample_size": choice.fit_sample_size,
            "lloyd_rounds_all_rows": choice.lloyd_iter,
            "cluster_sizes": sizes.tolist(),
            "picks_per_cluster": quota.tolist(),
        }
        return Selection(idx, cl, dist, labels=labels, info=info)
