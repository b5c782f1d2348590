"""``bayesian``: MC-dropout uncertainty sampling (Gal et al. 2017), the paper's Bayesian baseline.

Each round: a U-Net with dropout (``dropout`` after every normalisation; the benchmark's own config
is used as is when it already has dropout) is trained on the labelled set; every unlabelled image
gets T = ``mc_samples`` stochastic forward passes (dropout on, BatchNorm frozen); its score is the
mean over pixels of the predictive entropy H[p̄] = −Σ_c p̄_c log p̄_c of the pass-averaged class
probabilities p̄. The ``n_new`` highest-scoring images are added (ties: lower position first).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from coldseg.iterative import IterativeStrategy, register_iterative

_CHUNK = 256  # images per predict_proba call: bounds the (chunk, C, S, S) probability buffer


def mean_predictive_entropy(p: np.ndarray) -> np.ndarray:
    """(n, C, H, W) class probabilities (summing to 1 over C) -> (n,) mean pixel entropy in nats.

    0 · log 0 counts as 0.
    """
    p = np.asarray(p, dtype=np.float64)
    if p.ndim != 4:
        raise ValueError(f"probabilities must be (n, C, H, W); got shape {p.shape}")
    plogp = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)   # (n, C, H, W)
    return -plogp.sum(axis=1).mean(axis=(1, 2))                         # (n,)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` largest scores, largest first; ties go to the lower position."""
    return np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")[:k].astype(np.int64)


@register_iterative
class MCDropoutStrategy(IterativeStrategy):
    name = "bayesian"
    summary = "iterative: MC-dropout predictive entropy of a U-Net trained on the labels so far"

    def __init__(self, mc_samples: int = 8, dropout: float = 0.2):
        if mc_samples < 2:
            raise ValueError(f"mc_samples={mc_samples}: MC dropout needs at least 2 passes (e.g. 8)")
        if not 0.0 < dropout < 1.0:
            raise ValueError(f"dropout={dropout} must lie in (0, 1) for MC sampling (e.g. 0.2)")
        self.mc_samples = mc_samples
        self.dropout = dropout

    def round_config(self, cfg: Any) -> Any:
        return cfg if cfg.dropout > 0 else dataclasses.replace(cfg, dropout=self.dropout)

    def query(self, model, images, labelled, n_new, *, seed, device):
        from coldseg.segment.runner import predict_proba

        unl = np.setdiff1d(np.arange(len(images)), labelled)            # (u,) sorted
        scores = np.empty(len(unl))
        for s in range(0, len(unl), _CHUNK):
            p = predict_proba(model, images[unl[s : s + _CHUNK]], device=device,
                              mc_samples=self.mc_samples, reduce="mean", seed=seed + s)  # (c, C, S, S)
            scores[s : s + _CHUNK] = mean_predictive_entropy(p)
        best = top_k(scores, n_new)
        return unl[best], {"entropy_mean": float(scores.mean()), "entropy_picked": float(scores[best].mean())}
