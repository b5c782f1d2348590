"""The selector contract shared by every strategy.

A selector turns a feature matrix ``X`` (n × d) into an annotation list: ``budget`` unique row indices,
in pick order. Callers never special-case a strategy: they call :meth:`Selector.select` and read a
:class:`Selection`. Validation lives in the public method; subclasses implement ``_select`` and may
trust their input (finite, C-contiguous float32 or float64, 1 <= budget <= n), as scikit-learn's
public/private split does.

Precision: float32 and float64 features are used as given (no copy for a C-contiguous array: a pool of
10^6 × 128 float32 features is 0.5 GB, and a float64 copy would double it); float16 is widened to
float32 and integers to float64. Selectors are dtype-agnostic: they compute in the features' dtype and
accumulate sums (means, objectives) in float64.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

RandomState = int | np.random.Generator | None


@dataclass
class Selection:
    """What a selector returns.

    indices:  (budget,) int64, unique, in pick order (rank 1 first).
    clusters: (budget,) int64, the cluster of each pick, or -1 where the strategy has no clusters.
    distances: (budget,) float64, Euclidean distance of each pick to its cluster centroid
               (to the pool mean where the strategy has no clusters).
    labels:   (n,) int64, cluster of every pool item, or None.
    info:     JSON-serialisable facts for the manifest (K, silhouette curve, ...).
    """

    indices: np.ndarray
    clusters: np.ndarray
    distances: np.ndarray
    labels: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.indices)


def as_generator(random_state: RandomState) -> np.random.Generator:
    """A numpy Generator from a seed, a Generator (used as is) or None (fresh entropy)."""
    if isinstance(random_state, np.random.Generator):
        return random_state
    return np.random.default_rng(random_state)


_FINITE_CHUNK = 1 << 16  # rows per block of the NaN/inf check (keeps its mask small)


def float_dtype(X: np.ndarray) -> np.dtype:
    """The dtype a selector computes in: float32/float64 kept, float16 -> float32, anything else -> float64."""
    if X.dtype in (np.float32, np.float64):
        return X.dtype
    return np.dtype(np.float32) if X.dtype == np.float16 else np.dtype(np.float64)


def as_float(X: Any) -> np.ndarray:
    """``X`` as a C-contiguous float32/float64 array, copied only when its dtype or layout needs it."""
    X = np.asarray(X)
    return np.ascontiguousarray(X, dtype=float_dtype(X))


def check_features(features: Any) -> np.ndarray:
    """Validate a feature matrix; return it as C-contiguous float32 or float64 (n, d), see the module doc."""
    X = np.asarray(features)
    if X.ndim != 2:
        raise ValueError(f"features must be a 2-D array (n_images, n_features); got shape {X.shape}")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"features must be non-empty; got shape {X.shape}")
    if not np.issubdtype(X.dtype, np.number) or np.iscomplexobj(X):
        raise ValueError(f"features must be real numbers; got dtype {X.dtype}")
    X = as_float(X)
    bad = np.concatenate([~np.isfinite(X[s : s + _FINITE_CHUNK]).all(axis=1)
                          for s in range(0, X.shape[0], _FINITE_CHUNK)])  # (n,)
    if bad.any():
        rows = np.flatnonzero(bad)
        shown = ", ".join(map(str, rows[:10])) + (" ..." if len(rows) > 10 else "")
        raise ValueError(f"features hold NaN or infinite values in {len(rows)} row(s): {shown}")
    return X


def check_budget(budget: Any, n: int) -> int:
    """Validate an absolute budget against a pool of ``n`` items."""
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)):
        raise TypeError(f"budget must be an integer number of images; got {budget!r}")
    budget = int(budget)
    if budget <= 0:
        raise ValueError(f"budget={budget} must be at least 1")
    if budget > n:
        raise ValueError(f"budget={budget} exceeds the pool of {n} images; lower the budget")
    return budget


class Selector(ABC):
    """Base class of every selection strategy.

    Subclasses set ``name`` (the registry key), store constructor arguments unchanged, and implement
    ``_select(X, budget, rng)``. They must return exactly ``budget`` unique indices.
    """

    name: ClassVar[str] = ""
    #: one line for ``coldseg strategies`` and the README
    summary: ClassVar[str] = ""

    def select(self, features: Any, budget: int, *, random_state: RandomState = None) -> Selection:
        X = check_features(features)
        budget = check_budget(budget, X.shape[0])
        sel = self._select(X, budget, as_generator(random_state))
        _check_result(sel, budget, X.shape[0], self.name)
        return sel

    @abstractmethod
    def _select(self, X: np.ndarray, budget: int, rng: np.random.Generator) -> Selection:
        """Pick ``budget`` rows of the trusted matrix ``X`` (n, d)."""

    def get_params(self) -> dict[str, Any]:
        """Constructor arguments, for the manifest."""
        return {k: v for k, v in vars(self).items() if not k.endswith("_") and not k.startswith("_")}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"


def _check_result(sel: Selection, budget: int, n: int, name: str) -> None:
    idx = np.asarray(sel.indices)
    if idx.shape != (budget,) or len(np.unique(idx)) != budget or idx.min() < 0 or idx.max() >= n:
        raise RuntimeError(
            f"selector {name!r} broke the contract: expected {budget} unique indices in [0, {n}), "
            f"got {idx.shape[0]} ({len(np.unique(idx))} unique)"
        )
    sel.indices = idx.astype(np.int64)
    sel.clusters = np.asarray(sel.clusters, dtype=np.int64).reshape(budget)
    sel.distances = np.asarray(sel.distances, dtype=np.float64).reshape(budget)


def distances_to_mean(X: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Distance of the rows ``indices`` to the mean of ``X``: the default for cluster-free strategies."""
    mu = X.mean(axis=0, dtype=np.float64)  # (d,) accumulated in float64, no copy of X
    return np.linalg.norm(X[indices] - mu, axis=1)
