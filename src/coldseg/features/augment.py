"""Batched, device-side augmentations for MoCo v2, and the candidate set of the augmentation rule.

Every random parameter is drawn per image from an explicit ``torch.Generator`` that lives on the
images' device (a checkpoint stores its state), so nothing crosses between host and device inside a
training step: no host syncs. The pixel work runs there, batched (kornia's Gaussian filter, PyTorch's
grid sampling). Constants are cached per device.

Input and output: float tensors (B, 3, H, W) in [0, 1].
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Callable

import torch
import torch.nn.functional as F
from kornia.filters import gaussian_blur2d

Aug = Callable[[torch.Tensor, torch.Generator], torch.Tensor]

_LUMA = (0.299, 0.587, 0.114)


def _rand(gen: torch.Generator, n: int) -> torch.Tensor:
    return torch.rand(n, generator=gen, device=gen.device)


def _u(gen: torch.Generator, n: int, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * _rand(gen, n)


def _coin(gen: torch.Generator, n: int, p: float) -> torch.Tensor:
    return _rand(gen, n) < p


def _per(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(B,) parameter -> (B, 1, 1, 1) in x's dtype."""
    return v.to(dtype=x.dtype).view(-1, 1, 1, 1)


@lru_cache(maxsize=16)
def _const(name: str, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Constant tensors, built once per device (a fresh host->device copy would sync every step)."""
    to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]],
                          dtype=torch.float64)
    table = {"luma": torch.tensor(_LUMA, dtype=torch.float64).view(1, 3, 1, 1),
             "to_yiq": to_yiq, "from_yiq": torch.linalg.inv(to_yiq)}
    return table[name].to(device=device, dtype=dtype)


def gray(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 1, H, W) luma."""
    return (x * _const("luma", x.device, x.dtype)).sum(1, keepdim=True)


def resized_crop(x: torch.Tensor, gen: torch.Generator, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3),
                 flip: bool = True, max_rotation: float = 0.0) -> torch.Tensor:
    """Random resized crop (area fraction in ``scale``), horizontal flip and rotation, in one resample."""
    B, _, H, W = x.shape
    area = _u(gen, B, *scale)
    logr = _u(gen, B, math.log(ratio[0]), math.log(ratio[1]))
    w = torch.sqrt(area * logr.exp()).clamp(max=1.0)  # crop width, fraction of the side
    h = torch.sqrt(area / logr.exp()).clamp(max=1.0)
    cx = w / 2 + (1 - w) * _rand(gen, B)
    cy = h / 2 + (1 - h) * _rand(gen, B)
    sign = torch.where(_coin(gen, B, 0.5 if flip else 0.0), -1.0, 1.0)
    ang = _u(gen, B, -max_rotation, max_rotation) * (math.pi / 180.0)
    c, s = torch.cos(ang), torch.sin(ang)
    # output coords (u, v) in [-1, 1] -> source: rotation · diag(sign·w, h) · (u, v) + centre
    theta = torch.stack([
        torch.stack([c * sign * w, -s * h, 2 * cx - 1], 1),
        torch.stack([s * sign * w, c * h, 2 * cy - 1], 1),
    ], 1)  # (B, 2, 3)
    grid = F.affine_grid(theta.to(x.dtype), [B, x.shape[1], H, W], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def color_jitter(x: torch.Tensor, gen: torch.Generator, strength: float = 0.4, hue: float = 0.1,
                 p: float = 0.8) -> torch.Tensor:
    """Brightness, contrast, saturation (factors in 1 ± strength) and hue (± hue turns), with prob. p."""
    B = x.shape[0]
    on = _coin(gen, B, p)
    b = torch.where(on, _u(gen, B, 1 - strength, 1 + strength), 1.0)
    c = torch.where(on, _u(gen, B, 1 - strength, 1 + strength), 1.0)
    s = torch.where(on, _u(gen, B, 1 - strength, 1 + strength), 1.0)
    t = torch.where(on, _u(gen, B, -hue, hue), 0.0) * (2 * math.pi)
    x = (x * _per(x, b)).clamp(0, 1)
    m = gray(x).mean((2, 3), keepdim=True)
    x = ((x - m) * _per(x, c) + m).clamp(0, 1)
    g = gray(x)
    x = (g + (x - g) * _per(x, s)).clamp(0, 1)
    return hue_rotate(x, t)


def hue_rotate(x: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rotate chroma by ``angle`` (B,) radians in YIQ space (a linear hue shift)."""
    c, s = torch.cos(angle).to(x.dtype), torch.sin(angle).to(x.dtype)
    one, zero = torch.ones_like(c), torch.zeros_like(c)
    rot = torch.stack([one, zero, zero, zero, c, -s, zero, s, c], 1).view(-1, 3, 3)  # (B, 3, 3)
    M = _const("from_yiq", x.device, x.dtype) @ rot @ _const("to_yiq", x.device, x.dtype)  # (B, 3, 3)
    return torch.einsum("bij,bjhw->bihw", M, x).clamp(0, 1)


def random_grayscale(x: torch.Tensor, gen: torch.Generator, p: float = 0.2) -> torch.Tensor:
    on = _per(x, _coin(gen, x.shape[0], p).float())
    return x * (1 - on) + gray(x).expand_as(x) * on


def gaussian_blur(x: torch.Tensor, gen: torch.Generator, sigma=(0.1, 2.0), p: float = 0.5) -> torch.Tensor:
    """Gaussian blur with per-image sigma (pixels) with prob. p; unblurred images get sigma ≈ 0."""
    B = x.shape[0]
    sig = torch.where(_coin(gen, B, p), _u(gen, B, *sigma), 1e-3)
    k = 2 * math.ceil(3 * sigma[1]) + 1
    k = min(k, 2 * ((min(x.shape[-2:]) - 1) // 2) + 1)
    sig2 = sig.to(x.dtype).view(B, 1).expand(B, 2).contiguous()
    return gaussian_blur2d(x, (k, k), sig2, border_type="reflect")


def random_gamma(x: torch.Tensor, gen: torch.Generator, gamma=(0.5, 2.0)) -> torch.Tensor:
    g = torch.exp(_u(gen, x.shape[0], math.log(gamma[0]), math.log(gamma[1])))
    return x.clamp(min=1e-6) ** _per(x, g)


def random_contrast(x: torch.Tensor, gen: torch.Generator, factor=(0.3, 1.7)) -> torch.Tensor:
    m = gray(x).mean((2, 3), keepdim=True)
    return ((x - m) * _per(x, _u(gen, x.shape[0], *factor)) + m).clamp(0, 1)


def gaussian_noise(x: torch.Tensor, gen: torch.Generator, std=(0.03, 0.12)) -> torch.Tensor:
    sd = _per(x, _u(gen, x.shape[0], *std))
    noise = torch.randn(x.shape, generator=gen, device=gen.device, dtype=x.dtype)
    return (x + noise * sd).clamp(0, 1)


@dataclass(frozen=True)
class AugmentConfig:
    """MoCo v2's view pipeline; ``blur_sigma`` is in pixels at 224 px and scales with image size."""

    crop_scale: tuple[float, float] = (0.2, 1.0)
    jitter: float = 0.4
    hue: float = 0.1
    jitter_p: float = 0.8
    gray_p: float = 0.2
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    extra: str | None = None      # the augmentation chosen by eq. 7, appended after the base pipeline
    extra_p: float = 0.5

    def with_extra(self, name: str | None) -> "AugmentConfig":
        return replace(self, extra=name)


def base_view(x: torch.Tensor, gen: torch.Generator, cfg: AugmentConfig) -> torch.Tensor:
    """One MoCo v2 view of each image: crop+flip, colour jitter, grayscale, blur (+ the eq. 7 winner)."""
    size = x.shape[-1]
    x = resized_crop(x, gen, cfg.crop_scale)
    x = color_jitter(x, gen, cfg.jitter, cfg.hue, cfg.jitter_p)
    x = random_grayscale(x, gen, cfg.gray_p)
    f = size / 224.0
    x = gaussian_blur(x, gen, (cfg.blur_sigma[0] * f, cfg.blur_sigma[1] * f), cfg.blur_p)
    if cfg.extra is not None:
        strong = CANDIDATES[cfg.extra](x, gen)
        on = _per(x, _coin(gen, x.shape[0], cfg.extra_p).float())
        x = x * (1 - on) + strong * on
    return x


def weak_view(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """The whole image, randomly flipped: the starting point of each candidate in eq. 7."""
    return resized_crop(x, gen, scale=(1.0, 1.0), ratio=(1.0, 1.0))


def normalize(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] -> roughly zero-mean, unit-scale network input."""
    return (x - 0.5) / 0.25


# The candidate set J of eq. 7: each applies one strong augmentation, with probability 1.
CANDIDATES: dict[str, Aug] = {
    "crop": lambda x, g: resized_crop(x, g, scale=(0.08, 0.4), flip=False),
    "color": lambda x, g: color_jitter(x, g, strength=0.8, hue=0.2, p=1.0),
    "grayscale": lambda x, g: random_grayscale(x, g, p=1.0),
    "blur": lambda x, g: gaussian_blur(x, g, sigma=(0.5 * x.shape[-1] / 64, 1.5 * x.shape[-1] / 64), p=1.0),
    "rotation": lambda x, g: resized_crop(x, g, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=False,
                                          max_rotation=180.0),
    "gamma": lambda x, g: random_gamma(x, g),
    "contrast": lambda x, g: random_contrast(x, g),
    "noise": lambda x, g: gaussian_noise(x, g),
}

#: candidates that change nothing on a grayscale image are left out for grayscale pools
COLOR_ONLY = ("color", "grayscale")


def candidate_names(grayscale: bool, names: str | list[str] | None = "auto") -> list[str]:
    """Resolve a candidate set: 'auto' = all, minus colour-only ones for a grayscale pool."""
    if names in (None, "auto"):
        names = [n for n in CANDIDATES if not (grayscale and n in COLOR_ONLY)]
    elif isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    bad = [n for n in names if n not in CANDIDATES]
    if bad:
        raise ValueError(f"unknown augmentation candidate(s) {bad}; choose from: {', '.join(CANDIDATES)}")
    return list(names)
