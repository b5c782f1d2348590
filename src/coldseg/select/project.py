"""Principal components of a large feature matrix, fitted on a fixed sample, projected in chunks.

Used by selectors whose cost grows with the feature width on pools too large for the exact recipe
(``kmedian`` above ``max_rows``): 512-d MoCo backbone features cost 4x the 128-d ones per distance.

Fit: the covariance of at most ``sample_rows`` rows (a uniform draw with a fixed seed, so the basis
depends on the features only), in float64, and its top-``k`` eigenvectors (``numpy.linalg.eigh``).
Each vector's sign is fixed so that its largest-magnitude coordinate is positive, so the basis does
not flip between LAPACK builds. Projection: ``(X - mean) @ W`` in chunks of ``chunk`` rows, in X's
dtype. The basis is orthonormal, so Euclidean distances in the projection are those of the features
restricted to the top-k subspace (never larger than the originals), in the features' units.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

_CHUNK = 1 << 16
_FIT_CHUNK = 1 << 13  # 8192 rows x 512 x 8 bytes = 32 MiB per float64 block


Rows = Callable[[np.ndarray], np.ndarray]


def _same(A: np.ndarray) -> np.ndarray:
    return A


def _rows(prep: Rows | None) -> Rows:
    return _same if prep is None else prep


def fit_components(X: np.ndarray, k: int, sample_rows: int = 100_000,
                   prep: Rows | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """Mean (d,) float64, basis W (d, k) float64 and the share of the sample's variance it keeps.
    ``prep``: a row-wise transform (e.g. unit normalisation) applied to each block as it is read, so the
    transformed matrix is never held whole."""
    prep = _rows(prep)
    n, d = X.shape
    if not 1 <= k <= d:
        raise ValueError(f"k={k} must lie in [1, {d}] (the feature width)")
    rng = np.random.default_rng(0)  # the basis depends on the features only
    rows = np.sort(rng.choice(n, sample_rows, replace=False)) if n > sample_rows else np.arange(n)
    mean = np.zeros(d)
    for s in range(0, len(rows), _FIT_CHUNK):  # chunks of the sample: never a float64 copy of it
        mean += prep(X[rows[s : s + _FIT_CHUNK]]).sum(axis=0, dtype=np.float64)
    mean /= len(rows)
    cov = np.zeros((d, d))
    for s in range(0, len(rows), _FIT_CHUNK):
        B = prep(X[rows[s : s + _FIT_CHUNK]]).astype(np.float64) - mean
        cov += B.T @ B
    vals, vecs = np.linalg.eigh(cov)  # ascending
    W = vecs[:, ::-1][:, :k].copy()
    top = np.argmax(np.abs(W), axis=0)
    W *= np.sign(W[top, np.arange(k)])
    total = float(vals.clip(min=0).sum())
    kept = float(vals[::-1][:k].clip(min=0).sum() / total) if total > 0 else 1.0
    return mean, W, kept


def project(X: np.ndarray, mean: np.ndarray, W: np.ndarray, prep: Rows | None = None) -> np.ndarray:
    """(prep(X) - mean) @ W in chunks, (n, k) in X's dtype."""
    prep = _rows(prep)
    out = np.empty((X.shape[0], W.shape[1]), dtype=X.dtype)
    Wx, mx = W.astype(X.dtype), mean.astype(X.dtype)
    for s in range(0, X.shape[0], _CHUNK):
        out[s : s + _CHUNK] = (prep(X[s : s + _CHUNK]) - mx) @ Wx
    return out


def top_components(X: np.ndarray, k: int, prep: Rows | None = None) -> tuple[np.ndarray, dict]:
    """(n, k) projection of prep(X)'s rows on their top-k principal components, and what a selector's
    ``info`` records of it (``projected_dims``, ``projected_variance``: the share of variance kept)."""
    mean, W, kept = fit_components(X, k, prep=prep)
    return project(X, mean, W, prep), {"projected_dims": int(k), "projected_variance": kept}
