"""``coreset-iter``: core-set (Sener & Savarese 2018) k-center greedy on U-Net features, iterated.

Each round: a U-Net is trained on the labelled set; every pool image is embedded by the spatial mean
of the U-Net's bottleneck activations; k-center greedy then adds the ``n_new`` images that are, one
after another, farthest (Euclidean) from everything labelled or already added this round.
The greedy step is :func:`coldseg.select.fps.farthest_point_sampling` seeded with the squared
distances to the labelled set (``min_dist``), so no separate sampler exists.
"""
from __future__ import annotations

import numpy as np

from coldseg.iterative import IterativeStrategy, register_iterative
from coldseg.select.fps import farthest_point_sampling

_CHUNK = 1024


def sq_dist_to_set(X: np.ndarray, S: np.ndarray) -> np.ndarray:
    """(n,) squared Euclidean distance of each row of X (n, d) to its nearest row of S (k, d), k >= 1."""
    X = np.asarray(X, dtype=np.float64)
    S = np.asarray(S, dtype=np.float64)
    out = np.empty(len(X))
    s2 = (S * S).sum(1)                                                  # (k,)
    for a in range(0, len(X), _CHUNK):
        x = X[a : a + _CHUNK]                                            # (c, d)
        d = (x * x).sum(1)[:, None] - 2.0 * x @ S.T + s2[None, :]        # (c, k)
        out[a : a + _CHUNK] = np.maximum(d.min(1), 0.0)
    return out


def kcenter_from(X: np.ndarray, labelled: np.ndarray, n_new: int) -> np.ndarray:
    """k-center greedy from a non-empty labelled set: (n_new,) new rows of X in pick order."""
    labelled = np.asarray(labelled, dtype=np.int64)
    if len(labelled) == 0:
        raise ValueError("kcenter_from needs at least one labelled row (round 1 is random)")
    d = sq_dist_to_set(X, X[labelled])
    d[labelled] = -1.0                                                   # never re-pick a labelled row
    return farthest_point_sampling(X, n_new, min_dist=d)


@register_iterative
class CoresetRounds(IterativeStrategy):
    name = "coreset-iter"
    summary = "iterative: k-center greedy on the bottleneck features of a U-Net trained on the labels so far"

    def query(self, model, images, labelled, n_new, *, seed, device):
        from coldseg.segment.runner import bottleneck_features

        F = bottleneck_features(model, images, device=device)            # (n, d)
        picks = kcenter_from(F, labelled, n_new)
        return picks, {"feature_dim": int(F.shape[1])}
