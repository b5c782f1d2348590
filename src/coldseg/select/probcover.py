"""ProbCover (Yehuda, Dekel, Hacohen & Weinshall, NeurIPS 2022): greedy max coverage of delta-balls.

Features are L2-normalised. Row i covers row j when ||z_i - z_j|| < delta (open ball; a row always
covers itself). Greedy max coverage: pick the row whose ball holds the most uncovered rows, mark
them covered, repeat. Once everything is covered the greedy gain is 0 everywhere; the remaining picks
are then a uniform random draw (the selector's generator) among unpicked rows, as the paper does.
Equal gains are broken at random (``ties="random"``, the default): with the purity rule's delta most
balls hold a few rows, so ties decide most picks, and breaking them by the lower row index (``ties=
"index"``, what this project did until 2026-11-29 and what an ``argmax`` does) drew 22-59 % of the
picks from the first 10 % of the sorted file names on every benchmark dataset (docs/results.md).

delta is chosen without labels, as in the paper: K-means pseudo-labels on the normalised features
(K = min(max(budget, 2), 20) by default: the paper uses the number of classes, which segmentation
pools lack), and purity(delta) = the fraction of rows whose delta-ball holds a single pseudo-label.
A ball around row i is pure exactly when delta <= d_i, the distance from i to the nearest row of
another pseudo-label, so purity(delta) = mean_i [d_i >= delta]. We take the largest delta with
purity >= alpha (0.95): the ceil(alpha·m)-th largest d_i. This is exact, i.e. the limit of the
paper's grid search over ever finer grids; pass ``delta_grid`` to restrict delta to a grid instead.
Purity is estimated on a seeded sample of ``purity_sample`` rows (d_i itself is exact: against all
rows) when the pool is larger. The purity curve on a coarse grid goes to ``info`` for the manifest.

The graph is a sparse CSR matrix built in row blocks (never a dense n×n array); on pools of 20 000 rows
or more, pairs of far-apart cells of rows are skipped (:mod:`coldseg.select.neighbors`). If it would
exceed ``max_edges`` entries, delta is halved (with a warning) until it fits; a build that overflows
stops as soon as it does. K-means for the pseudo-labels runs on a sample above 20 000 rows and is
refined on every row (:func:`coldseg.select.kmeans.kmeans`).
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from coldseg.select.base import Selection, Selector, distances_to_mean
from coldseg.select.kmeans import kmeans, n_distinct_rows
from coldseg.select.neighbors import nearest_other_label, radius_graph
from coldseg.select.registry import register
from coldseg.select.representative import l2_normalise

REPORT_GRID = tuple(round(0.05 * i, 2) for i in range(1, 21))  # 0.05 .. 1.00


def sq_dist_to_other_label(Z: np.ndarray, labels: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Squared distance from each of ``rows`` to the nearest row of Z (n, d) with another label: (m,).

    inf where every row shares the label. The nearest row is found through BLAS; its distance is then
    recomputed by differences, the same arithmetic as :func:`delta_ball_graph`.
    """
    return nearest_other_label(Z, labels, np.asarray(rows))


def purity(sq_d: np.ndarray, delta: float) -> float:
    """Fraction of rows whose open delta-ball is pure, given squared distances to another label."""
    return float(np.mean(sq_d >= delta * delta))


def largest_pure_sq_delta(sq_d: np.ndarray, alpha: float) -> float:
    """Largest squared delta with purity >= alpha: the ceil(alpha·m)-th largest entry of sq_d."""
    need = max(1, math.ceil(alpha * len(sq_d) - 1e-9))
    return float(np.sort(sq_d)[::-1][need - 1])


def delta_ball_graph(Z: np.ndarray, sq_delta: float, max_edges: int) -> sp.csr_matrix | None:
    """CSR (n, n) with A[i, j] = 1 when ||z_i - z_j||^2 < sq_delta or i == j; None past max_edges.

    Built a block at a time, pairs between far-apart cells skipped (:func:`~neighbors.radius_graph`).
    """
    return radius_graph(Z, sq_delta, max_edges)


def greedy_max_coverage(A: sp.csr_matrix, budget: int,
                        rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Greedy picks on the coverage graph A (symmetric), until budget or until nothing is uncovered.

    Returns the picks (<= budget,) in order and the covered mask (n,). Ties between equal gains go to
    a uniform random row (one permutation drawn from ``rng`` ranks the rows), or to the lower row index
    when ``rng`` is None. Ties are the common case once the few large balls are taken: with the purity
    rule's delta a ball often holds 1-3 rows, and the lower-index rule then picks the first file names
    (22-59 % of the picks from the first 10 % of the sorted names in this project's benchmark runs).
    """
    n = A.shape[0]
    deg = np.diff(A.indptr).astype(np.int64)  # (n,) uncovered rows in each ball
    # key = deg·n + tie rank: argmax(key) is a highest-gain row, ties to the highest rank; updated with deg
    rank = (n - 1 - np.arange(n, dtype=np.int64)) if rng is None else rng.permutation(n).astype(np.int64)
    key = deg * n + rank
    covered = np.zeros(n, dtype=bool)
    picks: list[int] = []
    while len(picks) < budget:
        i = int(np.argmax(key))
        if key[i] < n:  # deg 0: nothing left uncovered
            break
        picks.append(i)
        ball = A.indices[A.indptr[i] : A.indptr[i + 1]]
        new = ball[~covered[ball]]
        covered[new] = True
        hit, times = np.unique(A[new].indices, return_counts=True)  # each ball loses its newly covered rows
        key[hit] -= times * n
    return np.asarray(picks, dtype=np.int64), covered


@register
class ProbCover(Selector):
    """Greedy coverage of delta-balls on L2-normalised features; delta from pseudo-label purity."""

    name = "probcover"
    summary = "ProbCover (Yehuda et al. 2022): greedy max coverage of delta-balls, delta by purity"

    def __init__(
        self,
        alpha: float = 0.95,
        delta: float | None = None,
        n_clusters: int | None = None,
        delta_grid: Sequence[float] | None = None,
        purity_sample: int = 5000,
        max_edges: int = 20_000_000,
        ties: str = "random",
    ):
        self.alpha = alpha
        self.delta = delta
        self.n_clusters = n_clusters
        self.delta_grid = delta_grid
        self.purity_sample = purity_sample
        self.max_edges = max_edges
        self.ties = ties

    def _check(self) -> None:
        if self.ties not in ("random", "index"):
            raise ValueError(f"ties={self.ties!r} must be 'random' or 'index'")
        if not _is_number(self.alpha) or not 0 < self.alpha <= 1:
            raise ValueError(f"alpha={self.alpha!r} must be a number in (0, 1]")
        if self.delta is not None and (not _is_number(self.delta) or not self.delta > 0):
            raise ValueError(f"delta={self.delta!r} must be a positive number (or None to choose it by purity)")
        k = self.n_clusters
        if k is not None and (isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1):
            raise ValueError(f"n_clusters={self.n_clusters!r} must be a positive integer or None")
        if self.delta_grid is not None and (len(self.delta_grid) == 0 or min(self.delta_grid) <= 0):
            raise ValueError(f"delta_grid={self.delta_grid!r} must hold positive values")

    def _select(self, X: np.ndarray, budget: int, rng: np.random.Generator) -> Selection:
        self._check()
        n = X.shape[0]
        Z = l2_normalise(X)
        seed = int(rng.integers(2**31 - 1))
        info: dict = {"alpha": float(self.alpha)}
        if self.delta is not None:
            delta = float(self.delta)
            sq_delta = delta**2
            info["delta_rule"] = "given"
        else:
            K = int(self.n_clusters) if self.n_clusters is not None else min(max(budget, 2), 20)
            K = n_distinct_rows(Z, K)
            labels = kmeans(Z, K, seed=seed)[0] if K > 1 else np.zeros(n, np.int64)
            rows = np.arange(n)
            if n > self.purity_sample:
                rows = np.sort(np.random.default_rng(seed).choice(n, int(self.purity_sample), replace=False))
            sq_d = sq_dist_to_other_label(Z, labels, rows)  # (m,) inf when only one pseudo-label
            if self.delta_grid is None:
                sq_delta = min(largest_pure_sq_delta(sq_d, self.alpha), 4.0)  # 2 = unit-sphere diameter
                delta = math.sqrt(sq_delta)
                info["delta_rule"] = "largest delta with purity >= alpha (exact)"
            else:
                grid = sorted(float(g) for g in self.delta_grid)
                ok = [g for g in grid if purity(sq_d, g) >= self.alpha]
                if not ok:
                    warnings.warn(
                        f"no delta in delta_grid reaches purity {self.alpha}; using the smallest, {grid[0]}",
                        stacklevel=3,
                    )
                delta = ok[-1] if ok else grid[0]
                sq_delta = delta**2
                info["delta_rule"] = "largest grid delta with purity >= alpha"
            info.update(
                n_pseudo_clusters=int(K),
                purity_sample_size=int(len(rows)),
                purity=float(np.mean(sq_d >= sq_delta)),  # squared: no sqrt round trip
                purity_curve={str(g): round(purity(sq_d, g), 6) for g in REPORT_GRID},
            )
        A = delta_ball_graph(Z, sq_delta, int(self.max_edges))
        while A is None:
            warnings.warn(
                f"the delta={delta:.4g} graph exceeds max_edges={self.max_edges}; halving delta",
                stacklevel=3,
            )
            delta /= 2.0
            sq_delta /= 4.0
            A = delta_ball_graph(Z, sq_delta, int(self.max_edges))
        tie_rng = np.random.default_rng(seed + 1) if self.ties == "random" else None
        picks, covered = greedy_max_coverage(A, budget, tie_rng)
        n_greedy = len(picks)
        if n_greedy < budget:  # everything covered: the rest is a uniform draw among unpicked rows
            rest = np.setdiff1d(np.arange(n), picks)
            picks = np.concatenate([picks, rng.permutation(rest)[: budget - n_greedy]])
        info.update(
            delta=float(delta),
            n_edges=int(A.nnz),
            mean_ball_size=float(A.nnz / n),
            coverage=float(covered.mean()),
            n_greedy=int(n_greedy),
            n_random=int(budget - n_greedy),
            ties=self.ties,
        )
        return Selection(picks, np.full(budget, -1), distances_to_mean(X, picks), info=info)


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))
