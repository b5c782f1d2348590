"""Kernel herding: the picks whose feature distribution is closest to the pool's (greedy MMD).

A random draw matches the pool's distribution only on average; a clustering selector (K-median, FPS)
covers the feature space, which is not the same thing: its picks over-represent sparse regions, where
one centre covers few images. This selector picks so that the picks, as a sample, match the pool.

The distance between the two distributions is the maximum mean discrepancy (Gretton et al. 2012) with
a Gaussian kernel k(x, y) = exp(-|x - y|^2 / h) on unit-normalised rows (``normalize=True``, the MoCo
geometry), h = the median squared distance between rows (the median heuristic, on a 2,000-row sample).
With S the picks so far (m = |S| + 1 after the next one), mu(x) = mean_j k(x, x_j) over the pool and
s(x) = sum over S of k(x, p), adding x changes MMD^2(S) by an amount that is smallest for

    x* = argmax  mu(x) - (s(x) + 1/2) / m

(the greedy minimiser of MMD^2 between the picks and the pool; Chen, Welling & Smola 2010 call the
same recursion kernel herding). The first pick is the densest row (largest mu); later picks trade
density against the kernel mass already picked nearby. Ties: the lower row index. The result is
deterministic; ``random_state`` only chooses the bandwidth and landmark samples of large pools.

Cost: mu needs every row against every row, chunked (no n x n matrix), and each pick one pass over
the rows (n·d): O(n·(n + budget)·d). Up to ``exact_below`` rows (20,000; every pool the validation
splits measured) that is what runs. Above it the pool is first split into cells of about
``cell_rows`` (5,000) rows by K-means (:func:`coldseg.select.fps.cell_labels`, as ``kmedian`` does),
the budget is shared among cells in proportion to their sizes (largest remainder), and herding runs
inside each cell against that cell's own distribution (exact mu within the cell): a stratified
herding, O(n·(cell_rows + budget/G)·d) for G cells. At 10^6 rows and a 1 % budget the flat version
took 226.5 s on a 2-core VM (docs/performance.md). The picks of all cells are listed interleaved, each
cell's i-th pick at position (i + 1/2) / quota of the list, so any prefix of the list is spread over
the cells in proportion. The reported MMD is then against ``landmarks`` random rows of the pool.
Wide features on such pools (more than ``max_dims`` (128) columns, e.g. the 512-d MoCo backbone) are
first projected, after unit normalisation, on their top ``max_dims`` principal components, as
``kmedian`` does (:mod:`coldseg.select.project`); ``info`` records the dimensions and variance kept.
Memory: one unit-normalised copy of X plus O(n) vectors (no n x n, n x budget or budget x budget matrix).

``bandwidth`` (default 1) multiplies h: below 1 the kernel is narrower, so matching the pool's kernel mean
constrains finer structure (at 1 many sets fit about equally; docs/results.md, twenty-second session).

``alpha`` (default 1: the pool itself) tempers the distribution the picks are made to match: the target
is q(x) proportional to p(x)^alpha, p the pool's density. alpha = 1 matches the pool; alpha < 1 flattens
it, moving picks from the dense middle toward sparse regions (alpha = 0 asks for an even spread over
the support, the goal of coverage selectors), without going to single outliers as farthest-point rules
do. The target's mean embedding is the pool's, each row weighted by w_i proportional to p(x_i)^(alpha-1)
(importance weights from p to q), with p(x_i) estimated by the same Gaussian kernel (mu, the pool term
above; against ``landmarks`` random rows on cell-split pools, where each cell's quota is then its share
of the weights instead of its share of the rows). It costs one more pass like mu's.
"""
from __future__ import annotations

import numpy as np

from coldseg.select.base import Selection, Selector, check_positive_ints, distances_to_mean
from coldseg.select.kmedian import cell_quotas
from coldseg.select.registry import register

_CHUNK_ELEMS = 1 << 22  # kernel entries per block of the mu computation (16 MB in float32)
_BANDWIDTH_SAMPLE = 2000


def unit_rows(X: np.ndarray) -> np.ndarray:
    """Rows of X (n, d) scaled to unit Euclidean length (all-zero rows stay zero); a new array."""
    norms = np.sqrt(np.einsum("ij,ij->i", X, X))[:, None]            # (n, 1), no (n, d) temporary
    return X / np.maximum(norms, np.finfo(X.dtype).tiny)


def median_bandwidth(X: np.ndarray, rng: np.random.Generator, sample: int = _BANDWIDTH_SAMPLE) -> float:
    """Median squared Euclidean distance between distinct rows of X (n, d), on <= ``sample`` rows.

    Falls back to the mean squared distance, then 1.0, when the median is 0 (mostly duplicate rows).
    """
    n = X.shape[0]
    S = X if n <= sample else X[np.sort(rng.choice(n, sample, replace=False))]
    S = S.astype(np.float64)
    sq = (S * S).sum(1)
    D2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * S @ S.T, 0.0)   # (s, s)
    iu = np.triu_indices(S.shape[0], 1)
    d = D2[iu]
    if d.size == 0:
        return 1.0
    h = float(np.median(d))
    if h <= 0.0:
        h = float(d.mean())
    return h if h > 0.0 else 1.0


def gaussian_kernel(A: np.ndarray, B: np.ndarray, h: float) -> np.ndarray:
    """exp(-|a - b|^2 / h) for every row pair of A (a, d) and B (b, d): (a, b), in A's dtype."""
    d2 = (A * A).sum(1)[:, None] + (B * B).sum(1)[None, :] - 2.0 * (A @ B.T)
    return np.exp(-np.maximum(d2, 0.0) / h)


def mean_kernel(X: np.ndarray, L: np.ndarray, h: float, weights: np.ndarray | None = None) -> np.ndarray:
    """(n,) float64 mean over the rows of L (l, d) of the kernel with each row of X (n, d), chunked;
    with ``weights`` (l,) summing to 1, the weighted mean instead."""
    out = np.empty(X.shape[0], dtype=np.float64)
    step = max(1, _CHUNK_ELEMS // max(L.shape[0], 1))
    for s in range(0, X.shape[0], step):
        K = gaussian_kernel(X[s : s + step], L, h)
        out[s : s + step] = K.mean(axis=1, dtype=np.float64) if weights is None else K @ weights
    return out


def tempering_weights(density: np.ndarray, alpha: float) -> np.ndarray:
    """(n,) importance weights, summing to 1, that turn a sample of p into one of q ~ p^alpha:
    density^(alpha - 1), from the estimated density (n,) of each row (positive)."""
    logw = (float(alpha) - 1.0) * np.log(np.maximum(density, np.finfo(np.float64).tiny))
    w = np.exp(logw - logw.max())
    return w / w.sum()


def checked_setting(name: str, value, *, zero_ok: bool, meaning: str) -> float:
    """``value`` as a finite float, > 0 (or >= 0 with ``zero_ok``), or a ValueError naming the setting,
    what it means (``meaning``) and an example."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        x = float("nan")
    if not np.isfinite(x) or x < 0.0 or (x == 0.0 and not zero_ok):
        raise ValueError(f"herding: {name}={value!r} must be a number {'>=' if zero_ok else '>'} 0 ({meaning}), "
                         f"e.g. herding[{name}=0.5]")
    return x


def checked_alpha(value) -> float:
    return checked_setting("alpha", value, zero_ok=True, meaning="1 matches the pool, 0 spreads the picks evenly")


def checked_scale(value) -> float:
    return checked_setting("bandwidth", value, zero_ok=False,
                           meaning="the factor on the median-heuristic bandwidth: 1 the default, smaller a narrower kernel")


@register
class KernelHerding(Selector):
    """Greedy MMD: the picks that, as a sample, best match the pool's feature distribution."""

    name = "herding"
    summary = "kernel herding (greedy MMD, Gaussian kernel): picks distributed like the pool"

    def __init__(self, normalize: bool = True, exact_below: int = 20000, landmarks: int = 4096,
                 cell_rows: int = 5000, max_dims: int = 128, alpha: float = 1.0, bandwidth: float = 1.0):
        self.normalize = normalize
        self.alpha = checked_alpha(alpha)          # here, so a bad value fails before any MoCo training
        self.bandwidth = checked_scale(bandwidth)  # factor on the median-heuristic squared bandwidth
        self.exact_below = exact_below
        self.landmarks = landmarks
        self.cell_rows = cell_rows
        self.max_dims = max_dims

    def _select(self, X: np.ndarray, budget: int, rng: np.random.Generator) -> Selection:
        check_positive_ints(self, "exact_below", "landmarks", "cell_rows", "max_dims")
        alpha = checked_alpha(self.alpha)
        scale = checked_scale(self.bandwidth)
        n, width = X.shape
        projected: dict = {}
        if n > int(self.exact_below) and width > int(self.max_dims):    # as kmedian: top principal components
            from coldseg.select.project import top_components

            # unit rows normalised block by block inside the projection: no second full-width copy
            Z, projected = top_components(X, int(self.max_dims), unit_rows if self.normalize else None)
        else:
            Z = unit_rows(X) if self.normalize else X                   # (n, d)
        h = median_bandwidth(Z, rng) * scale
        if n <= int(self.exact_below):
            mu = mean_kernel(Z, Z, h)                                   # (n,)
            target = mu if alpha == 1.0 else mean_kernel(Z, Z, h, tempering_weights(mu, alpha))
            idx = herd(Z, target, budget, h)
            info = {"mu": "exact", "cells": 1}
        else:
            G = -(-n // int(self.cell_rows))
            L = Z[np.sort(rng.choice(n, min(n, int(self.landmarks)), replace=False))]
            mu = mean_kernel(Z, L, h)                                   # pool density; the reported MMD
            w = None if alpha == 1.0 else tempering_weights(mu, alpha)
            groups, quota = cell_quotas(Z, budget, G, weights=w)
            picks, keys = [], []
            for rows, q in zip(groups, quota):
                if q == 0:
                    continue
                Zc = Z[rows]
                wc = None if w is None else w[rows] / w[rows].sum()
                picks.append(rows[herd(Zc, mean_kernel(Zc, Zc, h, wc), int(q), h)])
                keys.append((np.arange(q) + 0.5) / q)                    # interleave
            idx = np.concatenate(picks)[np.argsort(np.concatenate(keys), kind="stable")]   # ties: lower cell
            info = {"mu": f"exact within {int(G)} cells; MMD against {L.shape[0]} landmarks", "cells": int(G)}
        # density_range: how much the pool's kernel density varies (max / min of mu); alpha can only move
        # the picks as far as the weights mu^(alpha - 1) vary, i.e. by at most density_range^(1 - alpha)
        info = {"bandwidth": h, "bandwidth_factor": scale, "normalize": bool(self.normalize), "alpha": alpha,
                "density_range": float(mu.max() / max(mu.min(), np.finfo(np.float64).tiny)), **info, **projected,
                "mmd": float(np.sqrt(max(mmd2(Z, idx, h, mu), 0.0)))}
        return Selection(idx, np.full(budget, -1, dtype=np.int64), distances_to_mean(X, idx), info=info)


def herd(Z: np.ndarray, mu: np.ndarray, budget: int, h: float) -> np.ndarray:
    """Greedy MMD picks (budget,) among the rows of Z (n, d) given their pool term mu (n,); the first
    maximum wins (the lower index)."""
    n = Z.shape[0]
    s = np.zeros(n, dtype=np.float64)                                   # kernel mass of the picks
    taken = np.zeros(n, dtype=bool)
    idx = np.empty(budget, dtype=np.int64)
    zsq = np.einsum("ij,ij->i", Z, Z)                                   # (n,)
    for t in range(budget):
        score = mu - (s + 0.5) / (t + 1)
        score[taken] = -np.inf
        p = int(np.argmax(score))
        idx[t] = p
        taken[p] = True
        d2 = np.maximum(zsq + zsq[p] - 2.0 * (Z @ Z[p]), 0.0)
        s += np.exp(-d2 / h)
    return idx


def mmd2(Z: np.ndarray, picks: np.ndarray, h: float, mu: np.ndarray) -> float:
    """MMD^2 between the rows ``picks`` of Z (n, d) and all of Z, with mu (n,) the pool term of each row.

    The picks' own kernel mean is summed in blocks of rows (no picks x picks matrix).
    """
    P = Z[picks]
    step = max(1, _CHUNK_ELEMS // max(len(picks), 1))
    within = sum(float(gaussian_kernel(P[s : s + step], P, h).sum(dtype=np.float64))
                 for s in range(0, len(picks), step)) / float(len(picks)) ** 2
    return within - 2.0 * float(mu[picks].mean()) + float(mu.mean())
