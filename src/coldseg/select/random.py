"""Passive baseline: a uniform random draw without replacement."""
from __future__ import annotations

import numpy as np

from coldseg.select.base import Selection, Selector, distances_to_mean
from coldseg.select.registry import register


@register
class RandomSelector(Selector):
    name = "random"
    summary = "uniform random draw without replacement (the passive baseline)"
    reads_features = False

    def _select(self, X: np.ndarray, budget: int, rng: np.random.Generator) -> Selection:
        idx = rng.choice(X.shape[0], size=budget, replace=False)
        return Selection(idx, np.full(budget, -1), distances_to_mean(X, idx))
