"""K-means with k-means++ initialisation, and the choice of K by silhouette coefficient, at any pool size.

Small pools (n <= ``fit_sample``, 10 000 rows by default) are clustered on every row: scikit-learn KMeans
(Lloyd) for every K of the sweep, from ``n_init`` k-means++ seedings shared by the whole sweep (k-means++
is incremental, so the first K centres of one seeding to max K are a k-means++ seeding for K); the best
of the restarts (lowest inertia) is kept for each K.

Large pools (issue 5: 10^6 rows × 128 on a 2-core CPU) share the work of the sweep:

* one seeded uniform sample of ``fit_sample`` rows serves every K: each K is fitted on it as above
  (shared k-means++ seedings, ``n_init`` restarts) and scored there by the stratified silhouette estimate of
  :mod:`coldseg.select.silhouette`. No K of the sweep touches all n rows;
* the chosen K alone is refined on all rows by Lloyd iterations (:func:`lloyd`) started from the
  sample's centres, chunked: O(n + chunk·K) extra memory, never an n×n matrix nor a float64 copy of X.

Lloyd runs on a CUDA GPU through torch when one is present and on the CPU with numpy BLAS otherwise.
(faiss-cpu 1.15.1 was tried for the CPU assignment step: on this project's 2-core machine, under load,
assigning 200 000 × 128 rows to 20 centres took 2.7 s with faiss.IndexFlatL2 against 0.21 s with a
float32 BLAS product, so it is not used.) Results are deterministic for a given seed on a
given backend; the GPU sums in a different order, so its labels can differ from the CPU's at ties.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.cluster import KMeans, kmeans_plusplus
from threadpoolctl import threadpool_limits

from coldseg.select.silhouette import SilhouetteSample

FIT_SAMPLE = 10_000  # rows the K sweep is fitted on, above which it runs on a sample
#: Fits on <= FIT_SAMPLE rows are many small BLAS/OpenMP calls (a Lloyd round at K = 20 is ~50 MFLOP):
#: they run on one thread. On the project's busy 2-core machine that made the whole ``ca`` selection
#: of 10^5 rows 4x faster (2.7-3.1 s against 11.7 s, same picks); the large products stay threaded.
_SMALL_FIT_THREADS = 1
_CELLS = 1 << 22  # rows × centres per assignment block


@dataclass
class KChoice:
    k: int                         # the chosen K
    labels: np.ndarray             # (n,) cluster of each row under the chosen K
    centers: np.ndarray            # (k, d) float64
    silhouette: dict[int, float]   # K -> silhouette coefficient (estimated on a sample when n is large)
    sample_size: int | None        # rows the silhouette was computed on (None: all)
    fit_sample_size: int | None = None  # rows the sweep was fitted on (None: all)
    lloyd_iter: int = 0            # full-data Lloyd rounds run for the chosen K (0: none needed)


def n_distinct_rows(X: np.ndarray, cap: int) -> int:
    """min(number of distinct rows of X, cap), exactly, without sorting a large pool when avoidable.

    A seeded probe of 4·cap + 1024 rows usually shows ``cap`` distinct rows already; only pools that
    are mostly duplicates fall back to ``np.unique`` over every row.
    """
    n = X.shape[0]
    cap = max(int(cap), 0)
    m = min(n, 4 * cap + 1024)
    probe = X if m == n else X[np.sort(np.random.default_rng(0).choice(n, m, replace=False))]
    found = len(np.unique(probe, axis=0))
    if found >= cap or m == n:
        return min(found, cap)
    return min(len(np.unique(X, axis=0)), cap)


def _sklearn_kmeans(
    X: np.ndarray, k: int, seed: int, n_init: int, init: list[np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn K-means on X (m <= fit_sample rows, copied to float64: its float32 k-means++ path is
    many times slower). ``init``: one (>= k, d) seeding per restart, of which the first k rows are used;
    default: k-means++ with ``n_init`` restarts. Returns labels and the centres of the best restart."""
    Xd = np.asarray(X, dtype=np.float64)
    if init is None:
        km = KMeans(n_clusters=k, init="k-means++", n_init=n_init, random_state=seed).fit(Xd)
        return km.labels_.astype(np.int64), km.cluster_centers_.astype(np.float64)
    best = None
    for C in init:
        km = KMeans(n_clusters=k, init=C[:k], n_init=1, random_state=seed).fit(Xd)
        if best is None or km.inertia_ < best.inertia_:
            best = km
    return best.labels_.astype(np.int64), best.cluster_centers_.astype(np.float64)


def _gpu() -> str | None:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return None
    return "cuda" if torch.cuda.is_available() else None


def _assign_numpy(X: np.ndarray, C: np.ndarray) -> np.ndarray:
    """Nearest centre of every row: X (n, d), C (k, d) -> (n,) int64; ties to the lower centre."""
    n, k = X.shape[0], C.shape[0]
    Cd = C.astype(X.dtype)
    half_sq = 0.5 * (Cd * Cd).sum(axis=1)  # (k,): argmin ||x-c||^2 = argmin (|c|^2/2 - x.c)
    labels = np.empty(n, dtype=np.int64)
    step = max(1024, _CELLS // k)
    for s in range(0, n, step):
        G = X[s : s + step] @ Cd.T  # (c, k)
        np.subtract(half_sq, G, out=G)
        labels[s : s + step] = np.argmin(G, axis=1)
    return labels


def _means_numpy(X: np.ndarray, labels: np.ndarray, C: np.ndarray) -> np.ndarray:
    """Mean of each cluster's rows (float64 sums); an empty cluster keeps its centre from C."""
    k, d = C.shape
    sums = np.zeros((k, d))
    counts = np.bincount(labels, minlength=k)
    step = 1 << 16
    for s in range(0, X.shape[0], step):
        lab = labels[s : s + step]
        order = np.argsort(lab, kind="stable")
        lab_sorted = lab[order]
        starts = np.flatnonzero(np.r_[True, lab_sorted[1:] != lab_sorted[:-1]])  # first row of each run
        sums[lab_sorted[starts]] += np.add.reduceat(X[s : s + step][order], starts, axis=0, dtype=np.float64)
    out = C.astype(np.float64)
    nz = counts > 0
    out[nz] = sums[nz] / counts[nz, None]
    return out


def _lloyd_torch(X: np.ndarray, C: np.ndarray, max_iter: int, tol: float, device: str):
    import torch

    dev = torch.device(device)
    n, k = X.shape[0], C.shape[0]
    Xt = torch.from_numpy(X)
    Ct = torch.from_numpy(C).to(dev, torch.float64)
    step = max(1024, _CELLS // k)
    labels = prev = None
    rounds = 0
    for rounds in range(1, max_iter + 1):
        Cx = Ct.to(Xt.dtype)
        half_sq = 0.5 * (Cx * Cx).sum(1)
        sums = torch.zeros_like(Ct)
        parts = []
        for s in range(0, n, step):
            xc = Xt[s : s + step].to(dev, non_blocking=True)  # (c, d)
            lab = torch.argmin(half_sq[None, :] - xc @ Cx.T, dim=1)  # first minimum on ties
            sums.index_add_(0, lab, xc.to(torch.float64))
            parts.append(lab)
        labels = torch.cat(parts)
        counts = torch.bincount(labels, minlength=k).to(torch.float64)
        new = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], Ct)
        shift = float(((new - Ct) ** 2).sum())
        Ct = new
        if (prev is not None and torch.equal(labels, prev)) or shift <= tol:
            break
        prev = labels
    return labels.cpu().numpy().astype(np.int64), Ct.cpu().numpy(), rounds


def lloyd(
    X: np.ndarray, centers: np.ndarray, *, max_iter: int = 20, tol: float = 1e-4, device: str | None = "auto"
) -> tuple[np.ndarray, np.ndarray, int]:
    """Lloyd iterations on every row of X (n, d) from ``centers`` (k, d), chunked.

    Each round assigns every row to its nearest centre (ties: the lower centre) and moves each centre
    to the mean of its rows (an empty cluster keeps its centre). Stops when no row changes cluster,
    when the summed squared centre shift is <= ``tol`` × the mean per-feature variance of X (the
    scikit-learn convention), or after ``max_iter`` rounds. The returned centres are the means of the
    returned labels. ``device``: "auto" (CUDA when present, else numpy), None/"cpu-numpy" (numpy), or a
    torch device name. Returns labels (n,) int64, centres (k, d) float64 and the rounds run.
    """
    if device == "auto":
        device = _gpu()
    var = float(np.mean(X[:: max(1, X.shape[0] // 20_000)].var(axis=0, dtype=np.float64)))
    tol_abs = tol * var
    C = np.asarray(centers, dtype=np.float64)
    if device not in (None, "cpu-numpy"):
        return _lloyd_torch(X, C, max_iter, tol_abs, device)
    labels = None
    rounds = 0
    for rounds in range(1, max_iter + 1):
        new_labels = _assign_numpy(X, C)
        if labels is not None and np.array_equal(new_labels, labels):
            break  # C already holds the means of these labels
        labels = new_labels
        new = _means_numpy(X, labels, C)
        shift = float(((new - C) ** 2).sum())
        C = new
        if shift <= tol_abs:
            break
    return labels, C, rounds


def kmeans(
    X: np.ndarray, k: int, *, seed: int, n_init: int = 3, fit_sample: int = FIT_SAMPLE, max_iter: int = 20
) -> tuple[np.ndarray, np.ndarray]:
    """K-means (Lloyd, k-means++ init). Returns labels (n,) and centers (k, d).

    Up to ``fit_sample`` rows: scikit-learn on every row. Above: scikit-learn on a seeded uniform sample
    of ``fit_sample`` rows, then :func:`lloyd` on every row from the sample's centres.
    """
    n = X.shape[0]
    if n <= max(fit_sample, k):
        return _sklearn_kmeans(X, k, seed, n_init)
    sub = np.sort(np.random.default_rng(seed).choice(n, fit_sample, replace=False))
    with threadpool_limits(limits=_SMALL_FIT_THREADS):
        _, C = _sklearn_kmeans(X[sub], k, seed, n_init)
    labels, C, _ = lloyd(X, C, max_iter=max_iter)
    return labels, C


def choose_k(
    X: np.ndarray,
    ks: range | list[int],
    *,
    seed: int,
    sample_size: int = 5000,
    n_init: int = 3,
    fit_sample: int = FIT_SAMPLE,
    max_iter: int = 20,
) -> KChoice:
    """Fit K-means for every K in ``ks``; keep the K with the highest silhouette coefficient.

    The silhouette of each K is exact up to ``sample_size`` rows and a stratified-sample estimate above
    (:class:`~coldseg.select.silhouette.SilhouetteSample`: one seeded sample for every K, topped up per
    K to 10 rows in each cluster; ``sample_size`` in the result counts the shared sample). Above
    ``fit_sample`` rows the sweep runs on one seeded sample shared by every K and only the chosen K is
    refined on all rows (module docstring). K values that cannot be scored (K < 2 or K >= n, or fewer
    distinct rows than K) are skipped; if none is left, K = 1. Ties: the smaller K.
    """
    n = X.shape[0]
    ks = list(ks)
    n_distinct = n_distinct_rows(X, max(ks)) if ks else 0
    valid = [k for k in ks if 2 <= k < n and k <= n_distinct]
    if not valid:
        mean = X.mean(axis=0, dtype=np.float64, keepdims=True)
        return KChoice(1, np.zeros(n, np.int64), mean, {}, None)
    sub = None
    Xf = X
    if n > fit_sample:
        sub = np.sort(np.random.default_rng(seed).choice(n, fit_sample, replace=False))
        Xf = X[sub]  # (fit_sample, d), shared by every K
    sil = SilhouetteSample(Xf, sample_size, seed=seed)  # distances computed once for every K
    Xd = Xf.astype(np.float64)
    # k-means++ is incremental: the first K centres of one seeding to max(K) are a k-means++ seeding
    # for K. One seeding per restart therefore serves the whole sweep.
    with threadpool_limits(limits=_SMALL_FIT_THREADS):
        seeds = [kmeans_plusplus(Xd, max(valid), random_state=(seed + r) % 2**32)[0] for r in range(n_init)]
    scores: dict[int, float] = {}
    best: tuple[float, int, np.ndarray, np.ndarray] | None = None
    for k in valid:
        with threadpool_limits(limits=_SMALL_FIT_THREADS):
            labels, centers = _sklearn_kmeans(Xd, k, seed, n_init, init=seeds)
        s, _ = sil.score(labels, seed=(seed, k))
        scores[k] = s
        if best is None or s > best[0]:
            best = (s, k, labels, centers)
    if best is None:  # pragma: no cover - valid is non-empty
        raise RuntimeError("no K was scored")
    _, k, labels, centers = best
    rounds = 0
    if sub is not None:
        labels, centers, rounds = lloyd(X, centers, max_iter=max_iter)
    m = None if sil.exact and sub is None else len(sil.rows)
    return KChoice(k, labels, centers, scores, m, None if sub is None else fit_sample, rounds)
