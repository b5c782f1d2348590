"""Pool/test splits that respect source images, and subset sizes for annotation ratios.

Tiles cut from one aerial image are strongly correlated: if some land in the pool and others in the
test set, test scores are inflated. :func:`pool_test_split` therefore moves whole groups; when every
group holds one id it is a plain random split (the first ``n_test`` of a seeded permutation).
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np


def pool_test_split(n_or_ids: int | Sequence[str], groups: Sequence[str] | None = None, *,
                    test_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(pool_idx, test_idx): sorted int64 index arrays that partition ``range(n)``.

    ``groups[i]`` names the source image of item ``i`` (``None``: every item is its own group).
    Groups are visited in a seeded random order and moved to the test side until it holds
    ``round(test_fraction * n)`` items (a group that would overshoot is taken only if that lands
    strictly closer to the target, else skipped for a later, smaller one; the pool keeps at least one
    item), so all items of a group end on the same side. Deterministic for a given ``seed``.
    """
    n = n_or_ids if isinstance(n_or_ids, (int, np.integer)) else len(n_or_ids)
    n = int(n)
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction={test_fraction} must lie strictly between 0 and 1 (e.g. 0.2)")
    if n < 2:
        raise ValueError(f"cannot split {n} item(s) into a pool and a test set; need at least 2")
    if groups is None:
        groups = [str(i) for i in range(n)]
    if len(groups) != n:
        raise ValueError(f"got {len(groups)} group names for {n} items; pass one group per item")

    order: dict[str, list[int]] = {}               # group -> member indices, first-appearance order
    for i, g in enumerate(groups):
        order.setdefault(g, []).append(i)
    members = list(order.values())
    if len(members) < 2:
        raise ValueError(f"all {n} items belong to one group ({groups[0]!r}); a grouped split needs "
                         f"at least two source images")
    target = min(n - 1, max(1, round(test_fraction * n)))
    perm = np.random.default_rng(seed).permutation(len(members))

    test: list[int] = []
    for g in perm:
        if len(test) >= target:
            break
        size = len(members[g])
        if len(test) + size >= n:
            continue                               # the pool side must keep at least one item
        if test and abs(len(test) + size - target) >= abs(len(test) - target):
            continue                               # this group would overshoot; try a smaller one
        test.extend(members[g])
    test_idx = np.sort(np.asarray(test, dtype=np.int64))
    pool_idx = np.setdiff1d(np.arange(n, dtype=np.int64), test_idx)
    got = len(test_idx) / n
    if abs(got - test_fraction) > 0.05:
        warnings.warn(f"grouped split gives a test fraction of {got:.3f} instead of {test_fraction} "
                      f"({len(members)} groups of unequal size)", stacklevel=2)
    return pool_idx, test_idx


def subset_size(ratio_percent: float, n_pool: int) -> int:
    """Number of images labelled at ``ratio_percent`` % of a pool of ``n_pool``.

    ``max(1, round(ratio * n / 100))`` with halves rounded up (12.5 -> 13, not Python's 12).
    """
    if n_pool < 1:
        raise ValueError(f"n_pool={n_pool}: the pool must hold at least one image")
    if not 0.0 < ratio_percent <= 100.0:
        raise ValueError(f"ratio_percent={ratio_percent} must be in (0, 100] (a percentage, e.g. 10)")
    exact = ratio_percent * n_pool / 100.0
    return int(min(n_pool, max(1, math.floor(exact + 0.5 + 1e-9))))
