"""Core-set by k-center greedy (Sener & Savarese, ICLR 2018), from an empty labelled set.

The core-set approach picks the set S that minimises the covering radius
``max_i min_{s in S} ||x_i - x_s||``; its greedy 2-approximation adds, at every step, the point
farthest from everything chosen so far. That is exactly :func:`farthest_point_sampling`; this module
only adds the cold start (nothing labelled yet, the normal case here) and an optional labelled set.

Cold-start first pick (``start``):
  * ``"closest_to_mean"`` (default): the row nearest the pool mean, a central, typical first centre.
    The paper always starts from a labelled seed set; with none, the most central row is the natural
    stand-in for "the centre already chosen". Greedy then moves outwards from it.
  * ``"farthest_from_mean"``: the convention of the paper's released FPS code (and of :mod:`ca`).
  * ``"random"``: a uniform draw with the selector's generator.
Nothing here ever reads ``labeled[0]``: an empty labelled set is not an error.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from coldseg.select.base import Selection, Selector, as_float, distances_to_mean
from coldseg.select.fps import _sq_dist_to, farthest_point_sampling
from coldseg.select.registry import register

START_RULES = ("closest_to_mean", "farthest_from_mean", "random")


def k_center_greedy(
    X: np.ndarray,
    n_samples: int,
    *,
    labeled: Sequence[int] | np.ndarray = (),
    start: int | None = None,
) -> np.ndarray:
    """Greedy k-center: ``n_samples`` new rows of X (n, d), each farthest from all chosen so far.

    labeled: rows already chosen (may be empty). They are never returned; the first new pick is the
             row farthest from them. With no labelled rows the first pick is ``start`` (default: the
             row closest to the mean of X, ties towards the lowest index).
    Returns (n_samples,) int64 indices in pick order; requires n_samples <= n - len(labeled).
    Cost at most O(n_samples · n · d) time (far less on clustered pools, see :mod:`fps`); extra memory
    O(n), plus one copy of X on pools of 20 000 rows or more.
    """
    X = as_float(X)
    n = X.shape[0]
    lab = np.unique(np.asarray(labeled, dtype=np.int64))
    if lab.size and (lab.min() < 0 or lab.max() >= n):
        raise ValueError(f"labeled indices must lie in [0, {n}); got min {lab.min()}, max {lab.max()}")
    if not 0 <= n_samples <= n - lab.size:
        raise ValueError(
            f"n_samples={n_samples} must lie in [0, {n - lab.size}] (n={n} minus {lab.size} labelled)"
        )
    if lab.size == 0:
        if start is None:
            start = int(np.argmin(_sq_dist_to(X, X.mean(axis=0, dtype=np.float64))))
        return farthest_point_sampling(X, n_samples, start=start)
    d = np.full(n, np.inf)  # (n,) squared distance to the nearest labelled row
    for j in lab:
        d = np.minimum(d, _sq_dist_to(X, X[j]))
    d[lab] = -1.0  # labelled rows are never picked, even when every distance is 0
    return farthest_point_sampling(X, n_samples, min_dist=d)


def pad_by_k_center(X: np.ndarray, picks: np.ndarray, budget: int) -> np.ndarray:
    """Extend ``picks`` to exactly ``budget`` unique rows with k-center greedy (deterministic)."""
    picks = np.asarray(picks, dtype=np.int64)
    missing = budget - len(picks)
    if missing <= 0:
        return picks[:budget]
    return np.concatenate([picks, k_center_greedy(X, missing, labeled=picks)])


@register
class KCenterGreedy(Selector):
    """Core-set k-center greedy from an empty labelled set (the cold start)."""

    name = "kcenter"
    summary = "core-set k-center greedy (Sener & Savarese 2018), cold start from the most central row"

    def __init__(self, start: str = "closest_to_mean"):
        self.start = start

    def _select(self, X: np.ndarray, budget: int, rng: np.random.Generator) -> Selection:
        if self.start not in START_RULES:
            raise ValueError(f"start={self.start!r} is not one of {START_RULES}")
        n = X.shape[0]
        sq = _sq_dist_to(X, X.mean(axis=0, dtype=np.float64))
        if self.start == "closest_to_mean":
            first = int(np.argmin(sq))
        elif self.start == "farthest_from_mean":
            first = int(np.argmax(sq))
        else:
            first = int(rng.integers(n))
        # one step more than needed: greedy is deterministic, so the first `budget` picks are the
        # answer and the extra one is the row that sets the covering radius (O(n·d) extra work)
        run = k_center_greedy(X, min(budget + 1, n), start=first)
        idx = run[:budget]
        radius = 0.0
        if budget < n:
            radius = float(np.sqrt(_sq_dist_to(X[idx], X[run[budget]]).min()))
        info = {"start": self.start, "first_pick": first, "covering_radius": radius}
        return Selection(idx, np.full(budget, -1), distances_to_mean(X, idx), info=info)
