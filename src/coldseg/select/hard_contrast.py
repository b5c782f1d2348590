"""Hard-to-contrast picks inside K-means clusters (after Chen et al., "Making your first choice: to
address cold start problem in vision active learning", 2022).

Chen et al. read MoCo's training the way dataset cartography reads a classifier's: an image whose
augmented views the encoder keeps failing to match (a low mean probability of its positive key over
training) is *hard to contrast*, and they found such images the most useful first labels, once label
diversity is enforced through K-means pseudo-labels. Segmentation has no classes to diversify, so the
clusters are TypiClust's (K = budget, capped at ``max_clusters``; the same clustering, allocation and
small-cluster rule, :class:`~coldseg.select.typiclust.TypiClust`), and inside each cluster the image
with the lowest confidence is picked instead of the most typical one.

confidence: (n,) per image, the mean over every training step that saw it of the probability the
query gave its positive key (:meth:`coldseg.features.moco.MoCo.confidence`, stored as
``confidence.npy`` beside the features). It exists only for coldseg's own MoCo training, so this
strategy refuses features from a file.
"""
from __future__ import annotations

import numpy as np

from coldseg.select.base import Selection
from coldseg.select.registry import register
from coldseg.select.typiclust import TypiClust


@register
class HardContrast(TypiClust):
    """K-means with K = budget; the hardest-to-contrast member of each of the largest uncovered clusters."""

    name = "hard-contrast"
    summary = ("hard-to-contrast (Chen et al. 2022): K = budget clusters, the image MoCo matched least "
               "confidently in each")
    needs = ("confidence",)

    def __init__(self, min_cluster_size: int = 5, max_clusters: int = 500, minibatch_above: int = 20000):
        self.min_cluster_size = min_cluster_size
        self.max_clusters = max_clusters
        self.minibatch_above = minibatch_above

    def _select(self, X: np.ndarray, budget: int, rng: np.random.Generator, *,
                confidence: np.ndarray) -> Selection:
        sel = self._pick(X, budget, rng, lambda members: -confidence[members])   # least confident first
        sel.info["confidence"] = [round(-v, 6) for v in sel.info.pop("scores")]
        sel.info["pool_confidence_mean"] = float(confidence.mean())
        return sel
