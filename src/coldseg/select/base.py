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

Huge but finite features: a squared distance overflows once |x| nears sqrt(dtype max) (float32: ~1e19,
float64: ~1e154); k-means inertias and silhouette sums, which add n·d such terms, overflow earlier, and
some tables hold distances in float32 whatever the features' dtype (the silhouette's). So
:meth:`Selector.select` multiplies the whole matrix by a power of two, 2**-e, when its largest
magnitude reaches ``SCALE_ABOVE`` = 2**40 (~1.1e12, for both dtypes; see :func:`overflow_exponent`),
so that the largest magnitude lands in [0.5, 1). A
power of two is exact in binary floating point, so every comparison a selector makes (argmax, argmin,
ties) is unchanged: the picks are those of the unscaled features. ``Selection.distances`` are scaled
back (x 2**e) to the caller's units; other distance-valued ``info`` entries (e.g. kcenter's
``covering_radius``) stay in the scaled units, and ``info["feature_scale_log2"] = -e`` says so.
Features below the threshold are used untouched (no copy, identical results). Features so large that
a distance between two rows could exceed the float64 range (|x| > float64 max / (4·sqrt(d)), about
1e307) cannot give finite distances at all: :func:`check_features` refuses them, naming the rows.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
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
               (to the pool mean where the strategy has no clusters), in the features' units, finite.
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


def _max_abs(X: np.ndarray) -> float:
    """max |x| over a finite, non-empty matrix, without an |X| copy (two reductions)."""
    return max(float(X.max()), -float(X.min()))


#: features with max |x| >= this are scaled by a power of two before selection: float32's 2**(128/2 - 24),
#: a 2**48 margin on squared values (sums of n·d squared differences, up to 4 n d max|x|^2, stay finite
#: in float32 for n·d up to ~10^13), used for float64 too since some distance tables are float32
SCALE_ABOVE = 2.0**40


def overflow_exponent(X: np.ndarray) -> int:
    """e such that ``X * 2**-e`` is safe from overflow in squared-distance sums; 0 when X is safe as is.

    X: (n, d) finite float32/float64. Nonzero only when max |x| >= ``SCALE_ABOVE`` (2**40 ~ 1.1e12);
    then e is the binary exponent of max |x|, so the scaled matrix has max |x| in [0.5, 1).
    """
    return _exponent_for(_max_abs(X))


def _exponent_for(max_abs: float) -> int:
    return 0 if max_abs < SCALE_ABOVE else int(np.frexp(max_abs)[1])


def scale_by_power_of_two(X: np.ndarray, e: int) -> np.ndarray:
    """A new array ``X * 2**-e`` in X's dtype (exact barring underflow of tiny entries)."""
    return np.ldexp(X, np.intc(-e)).astype(X.dtype, copy=False)


def check_positive_ints(obj: Any, *keys: str) -> None:
    """Raise ValueError naming the first attribute of ``obj`` among ``keys`` that is not an int >= 1."""
    for key in keys:
        v = getattr(obj, key)
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{key}={v!r} must be a positive integer")


def check_features(features: Any) -> np.ndarray:
    """Validate a feature matrix; return it as C-contiguous float32 or float64 (n, d), see the module doc.

    Raises ValueError naming the rows for NaN/inf entries, and for entries so large (|x| > float64 max /
    (4·sqrt(d))) that the distance between two rows would not fit in float64.
    """
    return _checked(features)[0]


def _checked(features: Any) -> tuple[np.ndarray, float]:
    """:func:`check_features` and the largest magnitude it measured: (X (n, d), max |x|)."""
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
    limit = np.finfo(np.float64).max / (4.0 * np.sqrt(X.shape[1]))
    m = _max_abs(X)
    if m > limit:
        too_big = np.concatenate([(np.abs(X[s : s + _FINITE_CHUNK]) > limit).any(axis=1)
                                  for s in range(0, X.shape[0], _FINITE_CHUNK)])  # (n,)
        rows = np.flatnonzero(too_big)
        shown = ", ".join(map(str, rows[:10])) + (" ..." if len(rows) > 10 else "")
        raise ValueError(
            f"features are too large to measure distances in {len(rows)} row(s): {shown} (|x| up to "
            f"{m:.3g}; distances between rows would exceed the float64 range beyond "
            f"{limit:.3g}); divide the features by a constant, e.g. their largest magnitude"
        )
    return X, m


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


def check_side(side: Mapping[str, Any] | None, needs: tuple[str, ...], n: int, name: str) -> dict[str, np.ndarray]:
    """The side arrays a strategy ``needs``, each checked to be (n,) and finite, as float64."""
    out = {}
    for key in needs:
        if side is None or side.get(key) is None:
            raise ValueError(f"strategy {name!r} needs the per-image {key!r} besides the features; it is "
                             "recorded by coldseg's own MoCo training, so it is missing with features from "
                             "a file or array (train with coldseg instead)")
        a = np.asarray(side[key], dtype=np.float64)
        if a.shape != (n,):
            raise ValueError(f"{key!r} has shape {a.shape}; strategy {name!r} needs one value per image ({n},)")
        if not np.isfinite(a).all():
            raise ValueError(f"{key!r} holds NaN or inf at rows {np.flatnonzero(~np.isfinite(a))[:5].tolist()}")
        out[key] = a
    return out


class Selector(ABC):
    """Base class of every selection strategy.

    Subclasses set ``name`` (the registry key), store constructor arguments unchanged, and implement
    ``_select(X, budget, rng)``. They must return exactly ``budget`` unique indices.
    """

    name: ClassVar[str] = ""
    #: one line for ``coldseg strategies`` and the README
    summary: ClassVar[str] = ""
    #: per-image side arrays the strategy reads besides the features, passed to ``_select`` as keyword
    #: arguments; "confidence" is MoCo's (see coldseg.features.moco.MoCo.confidence)
    needs: ClassVar[tuple[str, ...]] = ()
    #: False where the picks depend only on the number of rows and the seed (``random``): a caller
    #: may then pass a placeholder (n, 1) instead of computing features (the benchmark does)
    reads_features: ClassVar[bool] = True

    def select(self, features: Any, budget: int, *, random_state: RandomState = None,
               side: Mapping[str, Any] | None = None) -> Selection:
        """``budget`` unique rows of ``features`` (n, d), in pick order; see :class:`Selection`.

        side: per-image arrays (n,) by name, of which the strategy reads those in ``needs``.
        Huge features are scaled by a power of two first (module doc): same picks, distances in the
        caller's units. The caller's array is never modified.
        """
        X, max_abs = _checked(features)
        budget = check_budget(budget, X.shape[0])
        extra = check_side(side, self.needs, X.shape[0], self.name)
        e = _exponent_for(max_abs)
        if e:
            X = scale_by_power_of_two(X, e)  # (n, d) a scaled copy
        sel = self._select(X, budget, as_generator(random_state), **extra)
        _check_result(sel, budget, X.shape[0], self.name)
        if e:
            sel.distances = np.ldexp(sel.distances, np.intc(e))  # (budget,) back in the caller's units
            sel.info["feature_scale_log2"] = -e
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
