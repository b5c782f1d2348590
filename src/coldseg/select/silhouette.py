"""The silhouette coefficient of a clustering: exact on small pools, a stratified-sample estimate on large ones.

The exact coefficient is the mean over all n rows of s_i = (b_i - a_i) / max(a_i, b_i), a_i the mean
distance of row i to the other rows of its cluster, b_i the smallest mean distance to the rows of
another cluster (s_i = 0 in a single-row cluster, scikit-learn's convention). It needs every pairwise
distance: O(n^2) time. Above ``sample_size`` rows we estimate it instead (the choice for issue 5):

* **Sample, stratified by cluster (post-stratified).** One seeded uniform sample of ``sample_size``
  rows, shared by every labelling (every K of the sweep), topped up per labelling so that each
  cluster holds at least min(n_c, f) sampled rows, f = 10 (the top-up rows are a seeded uniform draw
  from the cluster's unsampled rows). Within each cluster the sampled rows are then a uniform draw.
* **Per sampled row**, a_i and b_i are the mean distances to the *sampled* rows of each cluster: each
  is an unbiased estimate of the mean over the whole cluster.
* **The estimate** is the stratified mean sum_c (n_c / n) · mean_{sampled i in c} s_i: every cluster
  weighs its true share n_c / n, whatever its share of the sample (the top-up over-samples small ones).

Why not the plain mean over a uniform sample: it can miss a small cluster entirely (or keep one row
of it, whose s_i is then forced to 0), and its cluster shares fluctuate from draw to draw; the
post-stratified mean removes both (its variance is that of proportional stratified sampling). Why one
shared sample: the K sweep then computes the m × m distances once (float64 arithmetic, stored as
float32: 100 MB at m = 5000) and scoring a labelling costs one (m, m) × (m, K) product plus the few
top-up rows. Why not an O(n·K) centroid ("simplified") silhouette: a different quantity, not an
estimate of this one. Measured error against the exact value: ``tests/test_select_scale.py``
(n = 4000, 1000-row sample: below 0.02) and docs/performance.md, "Selection at scale".
"""
from __future__ import annotations

import numpy as np

_BLOCK = 1024  # rows of a distance matrix computed at once


def _pairwise(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Euclidean distances A (a, d) × B (b, d) -> (a, b) float32, float64 arithmetic, blockwise."""
    out = np.empty((A.shape[0], B.shape[0]), dtype=np.float32)
    sb = np.einsum("ij,ij->i", B, B)
    for s in range(0, A.shape[0], _BLOCK):
        a = A[s : s + _BLOCK]
        G = a @ B.T  # (c, b) float64
        G *= -2.0
        G += np.einsum("ij,ij->i", a, a)[:, None]
        G += sb[None, :]
        np.maximum(G, 0.0, out=G)
        np.sqrt(G, out=G)
        out[s : s + _BLOCK] = G
    return out


def _silhouette_from_sums(sums: np.ndarray, lab: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """s_i from summed distances ``sums`` (m, k) of each row to each cluster's sampled rows."""
    m = sums.shape[0]
    own = counts[lab]  # (m,)
    a = sums[np.arange(m), lab] / np.maximum(own - 1.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        means = sums / counts[None, :]
    means[np.arange(m), lab] = np.inf
    means[:, counts == 0] = np.inf
    b = means.min(axis=1)
    denom = np.maximum(a, b)
    with np.errstate(divide="ignore", invalid="ignore"):
        s_i = np.where(denom > 0, (b - a) / denom, 0.0)
    s_i[own <= 1] = 0.0
    return s_i


def _onehot(lab: np.ndarray, k: int) -> np.ndarray:
    out = np.zeros((len(lab), k), dtype=np.float32)
    out[np.arange(len(lab)), lab] = 1.0
    return out


def silhouette_values(X: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Exact s_i of every row of X (m, d) under ``labels`` (m,): (m,) float64. O(m^2) memory."""
    Z = np.asarray(X, dtype=np.float64)
    Z = Z - Z.mean(axis=0)  # centring keeps the |a|^2 + |b|^2 - 2ab form accurate
    lab = np.asarray(labels, dtype=np.int64)
    k = int(lab.max()) + 1
    D = _pairwise(Z, Z)
    np.fill_diagonal(D, 0.0)
    sums = (D @ _onehot(lab, k)).astype(np.float64)
    return _silhouette_from_sums(sums, lab, np.bincount(lab, minlength=k).astype(np.float64))


class SilhouetteSample:
    """One sample of the rows of X (n, d) and its pairwise distances, to score many labellings.

    All rows when n <= ``sample_size`` (then :meth:`score` is exact); otherwise a seeded uniform draw of
    ``sample_size`` rows, topped up per labelling to ``floor`` rows in every cluster (module doc).
    """

    def __init__(self, X: np.ndarray, sample_size: int, *, seed: int | tuple[int, ...] = 0, floor: int = 10):
        n = X.shape[0]
        self.X, self.n, self.floor = X, n, int(floor)
        self.exact = n <= sample_size
        if self.exact:
            self.rows = np.arange(n)
        else:
            self.rows = np.sort(np.random.default_rng(seed).choice(n, int(sample_size), replace=False))
        self.mean = X[self.rows].mean(axis=0, dtype=np.float64)  # (d,) centre for accurate distances
        self.Z = X[self.rows].astype(np.float64) - self.mean  # (m, d)
        self.D = _pairwise(self.Z, self.Z)  # (m, m) float32
        np.fill_diagonal(self.D, 0.0)

    def score(self, labels: np.ndarray, *, seed: int | tuple[int, ...] = 0) -> tuple[float, int]:
        """(silhouette coefficient, rows used) under ``labels`` (n,); -1.0 with fewer than 2 clusters."""
        lab = np.asarray(labels, dtype=np.int64)
        k = int(lab.max()) + 1
        sizes = np.bincount(lab, minlength=k)
        if (sizes > 0).sum() < 2:
            return -1.0, len(self.rows)
        lu = lab[self.rows]
        extra = np.empty(0, dtype=np.int64)
        if not self.exact:
            need = np.minimum(sizes, self.floor) - np.bincount(lu, minlength=k)
            if (need > 0).any():
                rng = np.random.default_rng(seed)
                free = np.ones(self.n, dtype=bool)
                free[self.rows] = False
                extra = np.concatenate([
                    rng.choice(np.flatnonzero(free & (lab == c)), int(need[c]), replace=False)
                    for c in np.flatnonzero(need > 0)
                ])
        le = lab[extra]
        oh_u, oh_e = _onehot(lu, k), _onehot(le, k)
        sums_u = (self.D @ oh_u).astype(np.float64)  # (m, k)
        if len(extra):
            Ze = self.X[extra].astype(np.float64) - self.mean
            D_eu = _pairwise(Ze, self.Z)  # (e, m)
            D_ee = _pairwise(Ze, Ze)
            np.fill_diagonal(D_ee, 0.0)
            sums_u += D_eu.T @ oh_e
            sums_e = (D_eu @ oh_u + D_ee @ oh_e).astype(np.float64)
            sums = np.concatenate([sums_u, sums_e])
        else:
            sums = sums_u
        lab_s = np.concatenate([lu, le])
        counts = np.bincount(lab_s, minlength=k).astype(np.float64)
        s_i = _silhouette_from_sums(sums, lab_s, counts)
        if self.exact:
            return float(s_i.mean()), len(lab_s)
        weight = sizes[lab_s] / (self.n * counts[lab_s])  # (m,): n_c / (n · m_c)
        return float((weight * s_i).sum()), len(lab_s)


def silhouette_estimate(
    X: np.ndarray, labels: np.ndarray, sample_size: int, *, seed: int | tuple[int, ...] = 0
) -> tuple[float, int]:
    """Silhouette of X (n, d) under ``labels`` (n,): exact up to ``sample_size`` rows, estimated above
    (one-off use of :class:`SilhouetteSample`). Returns (coefficient, rows used)."""
    return SilhouetteSample(X, sample_size, seed=seed).score(labels, seed=seed)
