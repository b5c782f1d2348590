"""A label-free check of feature quality: do two augmented views of an image land near each other?

Selection is only as good as the features: if two views of the same picture are not each other's
nearest neighbours, clusters and distances mostly describe the augmentation noise. After training,
:func:`view_consistency` embeds, for a seeded subset of up to ``n_images`` pool images, the clean
image and two training-style views (:func:`coldseg.features.augment.base_view`, without the eq. 7
extra), and reports

``view_top1``     the share of images whose view 1 has its own view 2 as nearest neighbour among all
                  view-2 embeddings (instance retrieval; chance = 1 / n);
``knn_overlap``   the mean share of an image's ``k`` nearest neighbours (clean embeddings) that are
                  also among the ``k`` nearest neighbours of its view 1 (among view-1 embeddings):
                  whether the neighbourhoods selection relies on survive augmentation
                  (chance ≈ k / n).

Both lie in [0, 1], higher is better; neither uses a label. They go into ``train.json`` and the
manifest (``features.feature_check``), so an undertrained encoder shows up before anyone annotates.

Chance is a low bar: a randomly initialised ResNet already retrieves views well above it, from colour
and layout alone (kvasir_seg, 998 images at 64 px, seed 0: untrained view_top1 0.035 and knn_overlap
0.061 against chance 0.002 and 0.020; benchmarks/feature_schedule.py). So :func:`feature_check` also
scores the same network at its initialisation (``untrained``) and warns when training did not make
neighbourhoods more stable than that: the encoder has not learnt yet and selection would run on
noise-dominated features (train longer: ``--min-steps``, ``--epochs``).
"""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from coldseg.features.augment import AugmentConfig, base_view, normalize
from coldseg.features.train import initial_model


def _knn(E: torch.Tensor, k: int) -> torch.Tensor:
    """(n, d) unit rows -> (n, k) indices of the k most similar other rows."""
    S = E @ E.T
    S.fill_diagonal_(-float("inf"))
    return S.topk(k, dim=1).indices


@torch.no_grad()
def view_consistency(model: Any, images: np.ndarray | torch.Tensor, *, seed: int = 0, n_images: int = 512,
                     k: int = 10, layer: str = "backbone", augment: AugmentConfig | None = None,
                     device: torch.device | None = None, batch: int = 256) -> dict[str, Any]:
    """Label-free feature check on up to ``n_images`` of ``images`` (n, 3, S, S) uint8 (module doc)."""
    n = len(images)
    m = min(n, int(n_images))
    if m < 3:
        return {"n_images": m, "view_top1": None, "knn_overlap": None, "k": 0}
    kk = min(int(k), m - 1)
    dev = device or next(model.parameters()).device
    rows = np.sort(np.random.default_rng(seed).choice(n, m, replace=False)) if m < n else np.arange(n)
    x_all = torch.as_tensor(np.asarray(images[rows]))                          # (m, 3, S, S) uint8
    gen = torch.Generator(device=dev).manual_seed(int(seed))
    cfg = augment or AugmentConfig()
    was_training = model.training
    model.eval()
    embs: list[list[torch.Tensor]] = [[], [], []]                               # clean, view 1, view 2
    for s in range(0, m, batch):
        x = x_all[s:s + batch].to(dev).float().div_(255)
        for slot, v in enumerate((x, base_view(x, gen, cfg), base_view(x, gen, cfg))):
            e = model.embed(normalize(v).contiguous(), layer).float()
            embs[slot].append(torch.nn.functional.normalize(e, dim=1))
    model.train(was_training)
    e0, e1, e2 = (torch.cat(e) for e in embs)                                   # (m, d) each
    top1 = float(((e1 @ e2.T).argmax(dim=1) == torch.arange(m, device=e1.device)).float().mean())
    n0, n1 = _knn(e0, kk), _knn(e1, kk)                                         # (m, kk)
    same = (n0.unsqueeze(2) == n1.unsqueeze(1)).any(dim=2).float()              # (m, kk)
    return {"n_images": m, "k": kk, "view_top1": round(top1, 4),
            "knn_overlap": round(float(same.mean()), 4),
            "chance_top1": round(1.0 / m, 4), "chance_knn_overlap": round(kk / (m - 1), 4)}


def feature_check(model: Any, images: np.ndarray | torch.Tensor, cfg: Any, *, seed: int,
                  device: torch.device | None = None) -> dict[str, Any]:
    """:func:`view_consistency` of the trained ``model`` and, under ``untrained``, of the same network at
    its initialisation (:func:`coldseg.features.train.initial_model`). ``beats_untrained`` says whether
    training made neighbourhoods more stable (``knn_overlap``), the property clustering and distance-based
    selection rely on; warns when it did not. ``view_top1`` is reported beside it but not judged: an
    untrained network keeps colour and layout, which already retrieve a view's twin well, and a trained
    one can score lower there while its neighbourhoods are better."""
    dev = device or next(model.parameters()).device
    kw = {"seed": seed, "layer": cfg.feature_layer, "augment": cfg.augment, "device": dev}
    check = view_consistency(model, images, **kw)
    if check["view_top1"] is None:
        return check
    start = initial_model(cfg, len(images), seed).to(dev)
    ref = view_consistency(start, images, **kw)
    check["untrained"] = {"view_top1": ref["view_top1"], "knn_overlap": ref["knn_overlap"]}
    check["beats_untrained"] = bool(check["knn_overlap"] > ref["knn_overlap"])
    warn_if_untrained(check)
    return check


def warn_if_untrained(check: dict | None) -> None:
    """Warn when a feature check (fresh, or read back from the cache) says the encoder has not beaten its
    own initialisation; silent when it has, or when no check was possible (tiny pools)."""
    if not check or check.get("beats_untrained", True):
        return
    ref = check["untrained"]
    warnings.warn(f"the trained features' neighbourhoods survive augmentation no better than the untrained "
                  f"network's (knn_overlap {check['knn_overlap']:.3f} vs {ref['knn_overlap']:.3f}): MoCo has "
                  "not learnt yet, so the selection rests on weak features; train longer (--min-steps, "
                  "--epochs)", stacklevel=3)
