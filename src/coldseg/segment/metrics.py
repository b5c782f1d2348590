"""Per-image Dice and 95% Hausdorff distance (HD95), with explicit empty-mask conventions.

For one image and one foreground class, with prediction P and truth T (pixel sets):

* Dice = 2|P ∩ T| / (|P| + |T|).
* HD95 = MONAI ``compute_hausdorff_distance(percentile=95)``: the larger of the two directed 95th
  percentiles of boundary-pixel distances, in pixels of the evaluated (resized) image.

Empty masks, where the formulas are undefined (Dice 0/0, distances to an empty boundary):

* P and T both empty   -> Dice 1, HD95 0 (a perfect answer: "nothing here").
* exactly one is empty -> Dice 0, HD95 = the image diagonal sqrt(H² + W²). MONAI would return inf
  (or nan); the diagonal is the largest distance two pixels of the image can have, so it is a finite
  worst case that keeps means and confidence intervals usable.

Multiclass: the scores of an image are the mean over the foreground classes 1..C-1 present in its
truth or its prediction (a class absent from both is not counted, so it cannot inflate the mean with
free 1s); an image with no foreground class in either gets the both-empty values (1, 0).
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from monai.metrics import compute_hausdorff_distance
from torch import nn

from coldseg.segment.train import as_tensor, normalise, resolve_device
from coldseg.segment.unet import hard_labels


def dice_per_image(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """pred, truth (n, H, W) bool -> (n,) Dice, 1.0 where both are empty."""
    pred, truth = _check(pred, truth)
    inter = (pred & truth).sum(axis=(1, 2)).astype(np.float64)            # (n,)
    total = pred.sum(axis=(1, 2)).astype(np.float64) + truth.sum(axis=(1, 2))
    out = np.ones(len(pred))
    has = total > 0
    out[has] = 2.0 * inter[has] / total[has]
    return out


def hd95_per_image(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """pred, truth (n, H, W) bool -> (n,) HD95 in pixels: 0 both empty, diagonal if one is empty."""
    pred, truth = _check(pred, truth)
    n, h, w = pred.shape
    p_any, t_any = pred.any(axis=(1, 2)), truth.any(axis=(1, 2))         # (n,)
    out = np.where(p_any == t_any, 0.0, math.hypot(h, w))
    both = np.flatnonzero(p_any & t_any)
    if len(both):
        yp = torch.from_numpy(np.stack([~pred[both], pred[both]], axis=1))  # (k, 2, H, W) one-hot
        yt = torch.from_numpy(np.stack([~truth[both], truth[both]], axis=1))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hd = compute_hausdorff_distance(yp, yt, include_background=False, percentile=95)
        out[both] = hd[:, 0].double().numpy()
    return out


def scores_per_image(pred: np.ndarray, truth: np.ndarray, n_classes: int = 2
                     ) -> tuple[np.ndarray, np.ndarray]:
    """pred, truth (n, H, W) integer class ids -> (dice (n,), hd95 (n,)), see the module docstring."""
    pred, truth = np.asarray(pred), np.asarray(truth)
    if n_classes == 2:
        return dice_per_image(pred > 0, truth > 0), hd95_per_image(pred > 0, truth > 0)
    n = len(pred)
    dice_sum, hd_sum, count = np.zeros(n), np.zeros(n), np.zeros(n)
    for c in range(1, n_classes):
        p, t = pred == c, truth == c
        seen = p.any(axis=(1, 2)) | t.any(axis=(1, 2))                    # (n,)
        if not seen.any():
            continue
        dice_sum[seen] += dice_per_image(p[seen], t[seen])
        hd_sum[seen] += hd95_per_image(p[seen], t[seen])
        count[seen] += 1
    dice = np.where(count > 0, dice_sum / np.maximum(count, 1), 1.0)
    hd = np.where(count > 0, hd_sum / np.maximum(count, 1), 0.0)
    return dice, hd


@torch.no_grad()
def predict_labels(model: nn.Module, images_u8: np.ndarray | torch.Tensor, *,
                   device: str | torch.device | None = None, batch_size: int = 64) -> np.ndarray:
    """(n, 3, S, S) uint8 -> (n, S, S) uint8 predicted class ids (model in eval mode)."""
    dev = resolve_device(device)
    x_all = as_tensor(images_u8, dev)
    cuda = dev.type == "cuda"
    fmt = torch.channels_last if cuda else torch.contiguous_format
    model.eval()
    out = []
    for i in range(0, x_all.shape[0], batch_size):
        x = normalise(x_all[i:i + batch_size]).contiguous(memory_format=fmt)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cuda):
            out.append(hard_labels(model(x)))
    return torch.cat(out).cpu().numpy()


def evaluate(model: nn.Module, images_u8: np.ndarray | torch.Tensor,
             masks_u8: np.ndarray | torch.Tensor, *, device: str | torch.device | None = None,
             n_classes: int = 2, batch_size: int = 64) -> dict[str, np.ndarray]:
    """Per-image scores of ``model`` on a test set: ``{"dice": (n,), "hd95": (n,)}``."""
    truth = masks_u8.cpu().numpy() if isinstance(masks_u8, torch.Tensor) else np.asarray(masks_u8)
    pred = predict_labels(model, images_u8, device=device, batch_size=batch_size)
    if pred.shape != truth.shape:
        raise ValueError(f"masks {truth.shape} do not match the images' predictions {pred.shape}")
    dice, hd = scores_per_image(pred, truth, n_classes)
    return {"dice": dice, "hd95": hd}


def _check(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, truth = np.asarray(pred, dtype=bool), np.asarray(truth, dtype=bool)
    if pred.shape != truth.shape or pred.ndim != 3:
        raise ValueError(f"prediction {pred.shape} and truth {truth.shape} must both be (n, H, W)")
    return pred, truth
