"""Farthest point sampling (greedy k-center), in O(n) memory, one pass over the rows per pick at most.

Two exact implementations of the same greedy rule (they differ only by float rounding):

* ``plain``: each pick updates every row's distance to the picked set by differences, in row chunks
  of the features' own dtype (no float64 copy of X).
* ``cells`` (used automatically for n >= 20 000 rows and >= 16 picks): the rows are first grouped into
  compact cells (k-means on a sample, every row to its nearest cell centre) and copied once, sorted by
  cell and centred on their cell's centre. A new pick p can only lower the distance of a row in cell k
  when ||p - m_k|| - R_k < sqrt(D_k) (m_k the centre, R_k the radius, D_k the largest squared distance
  in the cell; triangle inequality), so every other cell is skipped. Distances inside a visited cell
  are |x - m_k|^2 - 2 (x - m_k)·(p - m_k) + |p - m_k|^2 through one BLAS product. On pools made of
  separated groups, a pick visits its own group's cells only; in the worst case (one isotropic blob)
  it visits every cell: one pass over the rows, as ``plain``. Extra memory: one copy of X.
"""
from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_limits

from coldseg.select.base import as_float

_CHUNK = 65536
CELL_MIN_ROWS = 20_000  # use cells from this many rows ...
CELL_MIN_PICKS = 16  # ... and this many picks
_ROWS_PER_CELL = 2048
_MAX_CELLS = 256


def _sq_dist_to(X: np.ndarray, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Squared Euclidean distance of every row of X (n, d) to x (d,), chunked: (n,) float64."""
    out = np.empty(X.shape[0], dtype=np.float64) if out is None else out
    x = np.asarray(x, dtype=X.dtype)
    for s in range(0, X.shape[0], _CHUNK):
        diff = X[s : s + _CHUNK] - x  # (c, d) in X's dtype
        out[s : s + _CHUNK] = np.einsum("ij,ij->i", diff, diff)
    return out


def farthest_point_sampling(
    X: np.ndarray,
    n_samples: int,
    *,
    start: int | None = None,
    min_dist: np.ndarray | None = None,
    method: str = "auto",
) -> np.ndarray:
    """Greedy farthest point sampling.

    Each step picks the row farthest (Euclidean) from everything picked so far.

    X:          (n, d) features (float32/float64 used as given).
    n_samples:  how many rows to pick, 0 <= n_samples <= n.
    start:      the first pick. Default: the row farthest from the mean of X (the paper's released
                code). Ignored when ``min_dist`` is given.
    min_dist:   (n,) squared distances to an already-chosen set (k-center greedy from a labelled set);
                the first pick is then its argmax. Rows with a negative entry are never picked.
    method:     "auto", "plain" or "cells" (module docstring); the picks are the same up to rounding.
    Returns (n_samples,) int64 indices in pick order. Ties break towards the lowest index.
    """
    X = as_float(X)
    n = X.shape[0]
    if not 0 <= n_samples <= n:
        raise ValueError(f"n_samples={n_samples} must lie in [0, {n}]")
    if method not in ("auto", "plain", "cells"):
        raise ValueError(f"method={method!r} must be 'auto', 'plain' or 'cells'")
    picks = np.empty(n_samples, dtype=np.int64)
    if n_samples == 0:
        return picks
    if min_dist is None:
        if start is None:
            start = int(np.argmax(_sq_dist_to(X, X.mean(axis=0, dtype=np.float64))))
        d = np.full(n, np.inf)
        first = int(start)
    else:
        d = np.array(min_dist, dtype=np.float64)  # a copy: (n,) squared distance to the chosen set
        first = int(np.argmax(d))
    if method == "cells" or (method == "auto" and n >= CELL_MIN_ROWS and n_samples >= CELL_MIN_PICKS):
        return _fps_cells(X, n_samples, first, d)
    buf = np.empty(n, dtype=np.float64)
    nxt = first
    for i in range(n_samples):
        picks[i] = nxt
        np.minimum(d, _sq_dist_to(X, X[nxt], out=buf), out=d)
        d[nxt] = -1.0  # never re-pick, even among exact duplicates (minimum keeps it at -1)
        nxt = int(np.argmax(d))
    return picks


def cell_labels(X: np.ndarray, n_cells: int) -> np.ndarray:
    """Cell of every row: k-means++ and a few Lloyd rounds on a sample, then nearest centre. (n,)."""
    from sklearn.cluster import kmeans_plusplus

    from coldseg.select.kmeans import _assign_numpy, _means_numpy

    n = X.shape[0]
    rng = np.random.default_rng(0)  # the cells change the speed, never the picks
    S = X[np.sort(rng.choice(n, min(n, 20 * n_cells), replace=False))].astype(np.float64)
    C, _ = kmeans_plusplus(S, n_cells, random_state=0)
    C = C.astype(np.float64)
    for _ in range(5):
        C = _means_numpy(S, _assign_numpy(S, C), C)
    return _assign_numpy(X, C)  # in X's dtype


def _fps_cells(X: np.ndarray, n_samples: int, first: int, d: np.ndarray) -> np.ndarray:
    """FPS with cell pruning (module docstring). X (n, d), d (n,) initial squared distances."""
    n = X.shape[0]
    G = int(np.clip(n // _ROWS_PER_CELL, 2, _MAX_CELLS))
    cell = cell_labels(X, G)
    order = np.argsort(cell, kind="stable")  # rows grouped by cell, original order inside a cell
    bounds = np.r_[0, np.cumsum(np.bincount(cell, minlength=G))]
    inv = np.empty(n, dtype=np.int64)
    inv[order] = np.arange(n)
    Xs = X[order]  # (n, d) the one copy
    centre = np.zeros((G, X.shape[1]))
    for k in range(G):
        s, e = bounds[k], bounds[k + 1]
        if e > s:
            centre[k] = Xs[s:e].mean(axis=0, dtype=np.float64)
            Xs[s:e] -= centre[k].astype(X.dtype)  # centred on the cell's centre
    xn = np.einsum("ij,ij->i", Xs, Xs).astype(np.float64)  # (n,) |x - m_k|^2
    radius = np.zeros(G)
    D = np.full(G, -np.inf)  # largest squared distance to the picked set in each cell
    ds = d[order]
    for k in range(G):
        s, e = bounds[k], bounds[k + 1]
        if e > s:
            radius[k] = np.sqrt(xn[s:e].max())
            D[k] = ds[s:e].max()
    radius *= 1.0 + 1e-5  # margin for rounding: prune only when clearly safe
    cnorm = np.einsum("ij,ij->i", centre, centre)
    cell_of = np.repeat(np.arange(G), np.diff(bounds))  # (n,) cell of each sorted row
    filled = np.diff(bounds) > 0  # (G,) cells with rows (k-means++ on duplicates can leave some empty)
    picks = np.empty(n_samples, dtype=np.int64)
    # every step runs small BLAS products (one cell, ~1 MB): threads only add synchronisation, and on a
    # busy 2-core machine they made the loop 5-20x slower; one thread is as fast when idle
    with threadpool_limits(limits=1, user_api="blas"):
        _fps_loop(Xs, xn, centre, cnorm, radius, D, ds, bounds, order, inv, cell_of, filled, first, picks)
    return picks


def _fps_loop(Xs, xn, centre, cnorm, radius, D, ds, bounds, order, inv, cell_of, filled, first, picks):
    """The greedy steps of :func:`_fps_cells`; fills ``picks`` in place."""
    cur = first
    for i in range(len(picks)):
        picks[i] = cur
        j = inv[cur]
        p = Xs[j].astype(np.float64) + centre[cell_of[j]]  # (d,) the pick, original coordinates
        gap = np.sqrt(np.maximum(cnorm - 2.0 * (centre @ p) + p @ p, 0.0)) - radius  # (G,) lower bound
        visit = np.flatnonzero(filled & ((gap <= 0) | (gap * gap < D * (1.0 + 1e-6))))
        for k in visit:
            s, e = bounds[k], bounds[k + 1]
            q = p - centre[k]  # (d,)
            dist = Xs[s:e] @ q.astype(Xs.dtype)  # (c,)
            dist = xn[s:e] - 2.0 * dist + q @ q
            np.maximum(dist, 0.0, out=dist)
            np.minimum(ds[s:e], dist, out=ds[s:e])
            if s <= j < e:
                ds[j] = -1.0  # never re-pick (minimum keeps it at -1)
            D[k] = ds[s:e].max()
        top = np.flatnonzero(D == D.max())  # cells holding the farthest row; ties -> lowest row
        cur = min(int(order[bounds[k] + np.argmax(ds[bounds[k] : bounds[k + 1]])]) for k in top)
