"""Train a U-Net on a labelled subset for a FIXED number of optimisation steps.

Every step draws ``batch_size`` images *with replacement* from the labelled subset, so a run on 5% of
the pool and a run on 100% take exactly the same number of gradient steps (and the same compute);
only the variety of what they see differs. This keeps label-efficiency curves about labels, not about
how long each model trained.

Per step (all on the device, no host synchronisation): index sampling, a random dihedral augmentation
(horizontal flip, vertical flip, 90° rotation: the 8 symmetries of a square, uniformly), forward under
bf16 autocast (CUDA only), Dice + BCE (binary) or Dice + CE (multiclass), AdamW, cosine learning rate
after a linear warm-up. Randomness comes from one ``seed``: it seeds the weight initialisation, a
``torch.Generator`` for batches and augmentation, and dropout; the global RNG state is restored after.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from coldseg.segment.unet import DEFAULT_CHANNELS, build_unet, min_side, n_outputs


@dataclass
class SegConfig:
    steps: int = 1500
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.03          # linear warm-up over this share of steps, then cosine to 0
    dropout: float = 0.0
    channels: tuple[int, ...] = field(default_factory=lambda: DEFAULT_CHANNELS)
    num_res_units: int = 0                 # see coldseg.segment.unet for why
    amp: bool = True                       # bf16 autocast, CUDA only
    augment: bool = True
    log_every: int = 100                   # loss readout interval when progress is on

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps={self.steps} and batch_size={self.batch_size} must be >= 1")
        if self.lr <= 0 or self.weight_decay < 0:
            raise ValueError(f"lr={self.lr} must be > 0 and weight_decay={self.weight_decay} >= 0")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ValueError(f"warmup_fraction={self.warmup_fraction} must be in [0, 1)")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` -> CUDA when present, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def as_tensor(a: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 array or tensor on ``device`` (no copy when it already is there)."""
    t = a if isinstance(a, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(a))
    if t.dtype != torch.uint8:
        raise TypeError(f"expected uint8 images/masks, got {t.dtype}; pass the raw 0..255 arrays")
    return t.to(device, non_blocking=True)


def normalise(x_u8: torch.Tensor) -> torch.Tensor:
    """(B, 3, S, S) uint8 -> float in [-1, 1]."""
    return x_u8.float().mul_(1.0 / 127.5).sub_(1.0)


def dihedral_augment(x: torch.Tensor, y: torch.Tensor, g: torch.Generator
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Random flip-h, flip-v, rot90 per sample: x (B, C, S, S), y (B, S, S) -> same shapes.

    Three fair coins generate each of the 8 symmetries of the square with probability 1/8.
    """
    b = x.shape[0]
    coins = torch.rand((3, b), generator=g, device=x.device) < 0.5       # (3, B)
    fx, fy = coins.view(3, b, 1, 1, 1), coins.view(3, b, 1, 1)
    x = torch.where(fx[0], x.flip(-1), x)
    y = torch.where(fy[0], y.flip(-1), y)
    x = torch.where(fx[1], x.flip(-2), x)
    y = torch.where(fy[1], y.flip(-2), y)
    x = torch.where(fx[2], x.transpose(-1, -2).flip(-1), x)               # rot90 (square images)
    y = torch.where(fy[2], y.transpose(-1, -2).flip(-1), y)
    return x, y


def dice_ce_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Soft Dice (over the whole batch) + cross-entropy.

    logits (B, 1, H, W) -> binary (sigmoid, BCE); (B, C, H, W) -> multiclass (softmax, CE, Dice
    averaged over all C classes). target (B, H, W) integer class ids. Batch-level Dice stays defined
    when an image has no foreground (42% of aerial tiles).
    """
    logits = logits.float()
    if logits.shape[1] == 1:
        t = target.unsqueeze(1).float()                                  # (B, 1, H, W)
        p = torch.sigmoid(logits)
        ce = F.binary_cross_entropy_with_logits(logits, t)
    else:
        classes = torch.arange(logits.shape[1], device=logits.device).view(1, -1, 1, 1)
        t = (target.unsqueeze(1).long() == classes).float()            # (B, C, H, W) one-hot, no sync
        p = torch.softmax(logits, dim=1)
        ce = F.cross_entropy(logits, target.long())
    inter = (p * t).sum(dim=(0, 2, 3))                                   # (C,)
    denom = p.sum(dim=(0, 2, 3)) + t.sum(dim=(0, 2, 3))
    dice = 1.0 - (2.0 * inter + eps) / (denom + eps)
    return dice.mean() + ce


def _lr_factor(step: int, steps: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def train_segmenter(images_u8: np.ndarray | torch.Tensor, masks_u8: np.ndarray | torch.Tensor,
                    cfg: SegConfig, *, seed: int, device: str | torch.device | None = None,
                    n_classes: int = 2, progress: bool = False) -> nn.Module:
    """Train a fresh U-Net on (m, 3, S, S) images and (m, S, S) class-id masks; return it in eval mode."""
    dev = resolve_device(device)
    x_all, y_all = as_tensor(images_u8, dev), as_tensor(masks_u8, dev)
    m = x_all.shape[0]
    if x_all.ndim != 4 or x_all.shape[1] != 3 or y_all.shape != (m, *x_all.shape[2:]):
        raise ValueError(f"images {tuple(x_all.shape)} and masks {tuple(y_all.shape)} must be "
                         f"(m, 3, S, S) and (m, S, S)")
    if m == 0:
        raise ValueError("the labelled subset is empty; label at least one image")
    side = x_all.shape[-1]
    if x_all.shape[-2] != side or side % min_side(cfg.channels):
        raise ValueError(f"images are {tuple(x_all.shape[-2:])}; they must be square with a side "
                         f"divisible by {min_side(cfg.channels)} for channels={cfg.channels}")
    cuda = dev.type == "cuda"
    fmt = torch.channels_last if cuda else torch.contiguous_format
    fork_devices = [dev.index if dev.index is not None else torch.cuda.current_device()] if cuda else []

    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(seed)                     # weight init and dropout; restored on exit
        model = build_unet(3, n_outputs(n_classes), cfg.channels, cfg.dropout,
                           num_res_units=cfg.num_res_units).to(dev, memory_format=fmt)
        g = torch.Generator(device=dev)
        g.manual_seed(seed + 0x5EED)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                **({"fused": True} if cuda else {}))
        warmup = max(1, round(cfg.warmup_fraction * cfg.steps)) if cfg.warmup_fraction > 0 else 0
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, cfg.steps, warmup))
        model.train()
        bar = tqdm(range(cfg.steps), desc="training U-Net", unit="step", disable=not progress,
                   leave=False)
        for step in bar:
            idx = torch.randint(0, m, (cfg.batch_size,), generator=g, device=dev)  # with replacement
            x, y = normalise(x_all[idx]), y_all[idx]                  # (B, 3, S, S), (B, S, S)
            if cfg.augment:
                x, y = dihedral_augment(x, y, g)
            x = x.contiguous(memory_format=fmt)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cfg.amp and cuda):
                logits = model(x)
            loss = dice_ce_loss(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if progress and (step + 1) % cfg.log_every == 0:
                bar.set_postfix(loss=f"{loss.item():.4f}")          # host sync only when shown
    model.eval()
    return model
