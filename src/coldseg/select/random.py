"""Passive baseline: a uniform random draw without replacement.

``random[draw=j]`` (a study setting of the benchmark, not for picking real annotation lists) makes the
draw a fixed one, the j-th, whatever seed the run has: the same images for every seed. A benchmark of
``random[draw=1]`` ... ``random[draw=J]`` over a few seeds then varies the pick set and the U-Net's
training separately, so it measures how much the choice of a pick set of this size can move Dice at
all, against the training noise (``scripts/draw_spread.py``).
"""
from __future__ import annotations

import numpy as np

from coldseg.select.base import Selection, Selector, distances_to_mean
from coldseg.select.registry import register

#: mixed into a fixed draw's seed, so draw j is not the draw of a run with seed j
_DRAW_SALT = 0x0D4A3


def checked_draw(value) -> int | None:
    """``value`` as an int >= 0, None kept; else a ValueError saying what ``draw`` means."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"random: draw={value!r} must be a whole number >= 0 (the same draw for every "
                         "seed), e.g. random[draw=1]")
    return int(value)


@register
class RandomSelector(Selector):
    name = "random"
    summary = "uniform random draw without replacement (the passive baseline)"
    reads_features = False

    def __init__(self, draw: int | None = None):
        self.draw = checked_draw(draw)

    def _select(self, X: np.ndarray, budget: int, rng: np.random.Generator) -> Selection:
        draw = checked_draw(self.draw)
        if draw is not None:
            rng = np.random.default_rng([_DRAW_SALT, draw])
        idx = rng.choice(X.shape[0], size=budget, replace=False)
        info = {} if draw is None else {"draw": draw}
        return Selection(idx, np.full(budget, -1), distances_to_mean(X, idx), info=info)
