"""Features of a pool: train (or resume) MoCo, embed every image, cache the result by content.

Cache layout: ``<cache_dir>/<key>/`` holds ``checkpoint.pt`` while training runs (for --resume; it is
deleted once the features are saved), then ``features.npy``, ``ids.txt`` and ``train.json`` (the log). The key hashes the pool's content (ids and file
digests), the seed and every MoCo setting, so a new budget or strategy reuses the features and any
change of images or settings trains anew.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from coldseg.features.train import MocoConfig, _autocast, _cl, pick_device, train_moco
from coldseg.features.augment import normalize
from coldseg.features.moco import MoCo

FEATURES_VERSION = 2  # bump when training or embedding changes what features come out


def default_cache_dir() -> Path:
    env = os.environ.get("COLDSEG_CACHE_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "coldseg"


def cache_key(content_key: str, cfg: MocoConfig, seed: int) -> str:
    blob = json.dumps({"content": content_key, "cfg": cfg.to_dict(), "seed": seed, "v": FEATURES_VERSION},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def array_content_key(images: np.ndarray) -> str:
    """Content key for pixels without file digests (benchmark pools)."""
    a = np.ascontiguousarray(images)
    return hashlib.sha256(a.tobytes() + str(a.shape).encode()).hexdigest()


@torch.no_grad()
def embed_images(model: MoCo, images: torch.Tensor | np.ndarray, *, layer: str = "head",
                 batch: int = 256, device: torch.device | None = None) -> np.ndarray:
    """(n, 3, S, S) uint8 -> (n, d) float32 L2-normalised features of the un-augmented images."""
    dev = device or next(model.parameters()).device
    model.eval()
    images = torch.as_tensor(images)
    out = []
    for s in range(0, images.shape[0], batch):
        x = normalize(images[s : s + batch].to(dev).float().div_(255))
        with _autocast(dev):
            out.append(model.embed(_cl(x, dev), layer).float().cpu())
    return torch.cat(out).numpy().astype(np.float32)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def compute_features(images: np.ndarray, *, seed: int = 0, settings: MocoConfig | None = None,
                     device: str | torch.device | None = None, cache_dir: str | Path | None = None,
                     content_key: str | None = None, ids: list[str] | None = None,
                     grayscale: bool | None = None, resume: bool = False, use_cache: bool = True,
                     progress: bool = True) -> tuple[np.ndarray, dict[str, Any]]:
    """Features for a pool of (n, 3, S, S) uint8 images, trained from scratch with MoCo v2.

    Returns (features (n, d) float32, info) where info holds the training log, the cache key and
    whether the cache was hit. With ``use_cache`` a finished result for the same content, seed and
    settings is loaded instead of retrained; ``resume`` continues an interrupted training.
    """
    cfg = settings or MocoConfig()
    if images.shape[-1] != cfg.image_size or images.shape[-2] != cfg.image_size:
        raise ValueError(f"images are {images.shape[-2]}×{images.shape[-1]} px but settings say "
                         f"image_size={cfg.image_size}")
    dev = pick_device(device)
    if grayscale is None:
        grayscale = bool((images[:, 0] == images[:, 1]).all() and (images[:, 1] == images[:, 2]).all())
    key = cache_key(content_key or array_content_key(images), cfg, seed)
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = folder / key
    feats_path, log_path = folder / "features.npy", folder / "train.json"
    if use_cache and feats_path.exists() and log_path.exists():
        feats = np.load(feats_path)
        if feats.shape[0] == images.shape[0]:
            return feats, {"cache_key": key, "cache_hit": True, "cache_dir": str(folder),
                           **json.loads(log_path.read_text())}
    folder.mkdir(parents=True, exist_ok=True)
    model, log = train_moco(images, cfg, seed=seed, grayscale=grayscale, device=dev,
                            checkpoint=folder / "checkpoint.pt", resume=resume, progress=progress)
    feats = embed_images(model, images, layer=cfg.feature_layer, device=dev)
    info = {"log": log, "grayscale": grayscale}
    if use_cache:
        with open(feats_path.with_name(f"features.npy.tmp{os.getpid()}"), "wb") as f:
            np.save(f, feats)
        os.replace(feats_path.with_name(f"features.npy.tmp{os.getpid()}"), feats_path)
        if ids is not None:
            _atomic_write_bytes(folder / "ids.txt", ("\n".join(ids) + "\n").encode("utf-8", "surrogateescape"))
        _atomic_write_bytes(log_path, json.dumps(info, indent=1).encode())
        # the checkpoint only serves --resume of an unfinished training: drop it (~140 MB at width 64)
        (folder / "checkpoint.pt").unlink(missing_ok=True)
    return feats, {"cache_key": key, "cache_hit": False, "cache_dir": str(folder), **info}
