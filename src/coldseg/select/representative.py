"""Representative Annotation (RA), Zheng et al., AAAI 2019, read as a one-shot selector.

RA extracts features with an unsupervised network, splits the pool into groups by hierarchical
(agglomerative) clustering, and inside each group picks the images that best "cover" it: a max-cover
of the similarity-based representativeness F(S) = sum_{x in group} max_{s in S} sim(x, s), cosine
similarity, solved greedily (as in suggestive annotation, Yang et al. 2017). Our reading:

1. Groups: Ward agglomerative clustering of the L2-normalised features (Euclidean on unit vectors is a
   monotone function of cosine similarity, so groups and the coverage share one geometry) into
   K = min(budget, n_groups) groups, n_groups = 10 by default. The paper fixes the number of groups
   per dataset rather than deriving it from the budget; 10 is our default, recorded in ``info``. Ward
   needs O(m^2) memory, so above ``max_cluster_points`` rows it runs on a seeded uniform sample of
   that size and every other row joins the group with the nearest sample centroid.
2. Budget per group: proportional to group size, exact, by largest remainder (integer arithmetic;
   ties to the lower group index). Never more than a group holds.
3. Inside a group: greedy maximisation of the facility-location function
   f(S) = sum_i max_{s in S} sim(i, s) with sim = (1 + cos) / 2 in [0, 1] (the affine shift keeps f
   monotone submodular with f(empty) = 0, and greedy picks the same as with raw cosine started at -1).
   Lazy greedy (same picks as plain greedy, ties to the lower index). To stay within O(g·m) memory,
   groups larger than ``max_candidates`` offer a seeded random subset of that many candidates (never
   fewer than the group's quota), and groups larger than ``max_coverage`` are scored on a seeded random
   subset of that many members.
4. The list interleaves groups round-robin, largest group first, so any prefix spans the groups.
"""
from __future__ import annotations

import heapq

import numpy as np
from scipy.spatial.distance import cdist
from sklearn.cluster import AgglomerativeClustering

from coldseg.select.base import Selection, Selector, check_positive_ints
from coldseg.select.ca import interleave
from coldseg.select.registry import register


def l2_normalise(X: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; all-zero rows stay zero. (n, d) -> (n, d), X's dtype, chunked."""
    out = np.zeros_like(X)
    for s in range(0, X.shape[0], 1 << 16):
        x = X[s : s + (1 << 16)]
        norm = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64))[:, None]  # (c, 1)
        np.divide(x, norm, out=out[s : s + len(x)], where=norm > 0, casting="unsafe")
    return out


def proportional_split(sizes: np.ndarray | list[int], budget: int) -> np.ndarray:
    """Split ``budget`` proportionally to ``sizes`` by largest remainder, exactly.

    >>> proportional_split([50, 30, 20], 7).tolist()  # 3.5, 2.1, 1.4 -> 3, 2, 1 + 1 to the .5
    [4, 2, 1]
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    total = int(sizes.sum())
    if not 0 <= budget <= total:
        raise ValueError(f"budget={budget} must lie in [0, {total}] (the items in the groups)")
    share = budget * sizes  # exact integers: quota = share / total
    quota = share // total
    rest = share % total
    left = budget - int(quota.sum())
    order = np.lexsort((np.arange(len(sizes)), -rest))  # largest remainder first, then index
    quota[order[:left]] += 1
    return quota  # quota <= sizes: share / total < size unless budget == total (then no remainder)


def facility_location_greedy(S: np.ndarray, q: int) -> tuple[np.ndarray, float]:
    """Greedy max of f(T) = sum_i max_{j in T} S[i, j] over q columns. S (g, m) in [0, 1].

    Lazy evaluation with a heap of stale upper bounds (valid by submodularity). Returns the chosen
    columns (q,) in pick order and f of the result.
    """
    g, m = S.shape
    if not 0 <= q <= m:
        raise ValueError(f"q={q} must lie in [0, {m}] (the number of candidates)")
    cur = np.zeros(g)  # (g,) coverage of each row so far
    heap = [(-float(v), j) for j, v in enumerate(S.sum(axis=0))]
    heapq.heapify(heap)
    picks: list[int] = []
    while len(picks) < q:
        _, j = heapq.heappop(heap)
        gain = float(np.maximum(S[:, j] - cur, 0.0).sum())
        if not heap or (-gain, j) <= heap[0]:
            picks.append(j)
            cur = np.maximum(cur, S[:, j])
        else:
            heapq.heappush(heap, (-gain, j))
    return np.asarray(picks, dtype=np.int64), float(cur.sum())


def agglomerative_groups(Z: np.ndarray, k: int, rng: np.random.Generator, max_points: int) -> np.ndarray:
    """Ward clustering of Z (n, d) into k groups; on a sample of max_points rows when n is larger."""
    n = Z.shape[0]
    if k <= 1 or n < 2:
        return np.zeros(n, dtype=np.int64)
    if n <= max_points:
        return AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(Z).astype(np.int64)
    sub = np.sort(rng.choice(n, max_points, replace=False))
    lab_sub = AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(Z[sub])
    cent = np.stack([Z[sub][lab_sub == c].mean(axis=0) for c in range(k)])  # (k, d)
    labels = np.empty(n, dtype=np.int64)
    step = max(1, (1 << 22) // k)
    for s in range(0, n, step):  # nearest sample centroid, chunked
        labels[s : s + step] = np.argmin(cdist(Z[s : s + step], cent, metric="sqeuclidean"), axis=1)
    labels[sub] = lab_sub  # the clustered rows keep their own group
    return labels


@register
class RepresentativeAnnotation(Selector):
    """Ward groups, proportional budget, greedy facility-location (cosine) cover inside each group."""

    name = "ra"
    summary = "representative annotation (Zheng et al. 2019): Ward groups + greedy cosine max-cover"

    def __init__(
        self,
        n_groups: int = 10,
        max_cluster_points: int = 5000,
        max_candidates: int = 2000,
        max_coverage: int = 5000,
    ):
        self.n_groups = n_groups
        self.max_cluster_points = max_cluster_points
        self.max_candidates = max_candidates
        self.max_coverage = max_coverage

    def _select(self, X: np.ndarray, budget: int, rng: np.random.Generator) -> Selection:
        check_positive_ints(self, "n_groups", "max_cluster_points", "max_candidates", "max_coverage")
        n = X.shape[0]
        Z = l2_normalise(X)
        K = min(budget, int(self.n_groups), n)
        labels = agglomerative_groups(Z, K, rng, int(self.max_cluster_points))
        K = int(labels.max()) + 1
        sizes = np.bincount(labels, minlength=K)
        quota = proportional_split(sizes, budget)
        groups, coverage = [], []
        order = np.lexsort((np.arange(K), -sizes))  # largest group first
        for c in order:
            members = np.flatnonzero(labels == c)
            q = int(quota[c])
            if q == 0:
                groups.append(members[:0])
                continue
            cand = members
            if len(members) > self.max_candidates:
                m = max(int(self.max_candidates), q)
                cand = np.sort(rng.choice(members, m, replace=False))
            ground = members
            if len(members) > self.max_coverage:
                ground = np.sort(rng.choice(members, int(self.max_coverage), replace=False))
            S = np.clip((1.0 + Z[ground] @ Z[cand].T) / 2.0, 0.0, 1.0)  # (g, m) similarity
            cols, f = facility_location_greedy(S, q)
            groups.append(cand[cols])
            coverage.append(f / len(ground))
        idx, pos = interleave(groups)
        cl = order[pos]
        cent = np.stack([X[labels == c].mean(axis=0) for c in range(K)])  # (K, d) in feature space
        info = {
            "k": int(K),
            "k_rule": f"min(budget, n_groups={int(self.n_groups)})",
            "linkage": "ward on L2-normalised features",
            "clustered_rows": int(min(n, self.max_cluster_points)),
            "similarity": "(1 + cosine) / 2",
            "cluster_sizes": sizes.tolist(),
            "picks_per_cluster": quota.tolist(),
            "mean_coverage_per_group": [round(v, 6) for v in coverage],
        }
        return Selection(idx, cl, np.linalg.norm(X[idx] - cent[cl], axis=1), labels=labels, info=info)
