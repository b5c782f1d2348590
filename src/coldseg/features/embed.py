"""Features of a pool: train (or resume) MoCo, embed every image, cache the result by content.

Cache layout: ``<cache_dir>/<key>/`` holds ``checkpoint.pt`` while training runs (for --resume; it is
deleted once the features are saved), then ``features.npy`` (the 'backbone' layer; other layers
``features-<layer>.npy``), ``confidence.npy``, ``encoder.pt`` (the trained query encoder, so that another
layer is embedded without training again), ``ids.txt`` and ``train.json`` (the log and each layer's
label-free check). The key hashes the pool's content (ids and file digests), the seed, every MoCo
setting but the feature layer and, above one, the number of processes, so a new budget, strategy or
layer reuses the training and any change of images or settings trains anew. The pool may be a memmap
(coldseg.data.decoded): it is then streamed.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from coldseg.data.stream import LoaderConfig, PixelSource
from coldseg.features.augment import normalize
from coldseg.features.distributed import SINGLE, DistInfo, broadcast_object, gather_rows, shard
from coldseg.features.moco import MoCo
from coldseg.features.train import (MocoConfig, _autocast, _cl, initial_model, pick_device, reproducible_kernels,
                                    train_moco)
from coldseg.io.atomic import atomic_write, atomic_write_bytes
from coldseg.io.outputs import remove_dead_temp_files

FEATURES_VERSION = 3  # bump when training or embedding changes what features come out
_CHUNK = 1024         # images per slice when scanning a (possibly memory-mapped) pool


def default_cache_dir() -> Path:
    env = os.environ.get("COLDSEG_CACHE_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "coldseg"


def cache_key(content_key: str, cfg: MocoConfig, seed: int, world_size: int = 1) -> str:
    """Features cache key. ``world_size`` enters only above 1: W processes split every batch into W
    parts with their own batch statistics, so their features differ from one process's."""
    settings = {k: v for k, v in cfg.to_dict().items() if k != "feature_layer"}   # read out, not trained
    key = {"content": content_key, "cfg": settings, "seed": seed, "v": FEATURES_VERSION}
    if world_size > 1:
        key["world_size"] = world_size
    blob = json.dumps(key, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def array_content_key(images: np.ndarray) -> str:
    """Content key for pixels without file digests (benchmark pools); reads a memmap in slices."""
    h = hashlib.sha256()
    for s in range(0, images.shape[0], _CHUNK):
        h.update(np.ascontiguousarray(images[s : s + _CHUNK]).tobytes())
    h.update(str(tuple(images.shape)).encode())
    return h.hexdigest()


def is_grayscale(images: np.ndarray) -> bool:
    """Whether every image of (n, 3, S, S) has three equal channels (read in slices)."""
    for s in range(0, images.shape[0], _CHUNK):
        a = np.asarray(images[s : s + _CHUNK])
        if not ((a[:, 0] == a[:, 1]).all() and (a[:, 1] == a[:, 2]).all()):
            return False
    return True


def embed_images(model: MoCo, images: torch.Tensor | np.ndarray | PixelSource, *, layer: str = "backbone",
                 batch: int = 256, device: torch.device | None = None, loader: LoaderConfig | None = None,
                 dist: DistInfo | None = None) -> np.ndarray:
    """(n, 3, S, S) uint8 -> (n, d) float32 L2-normalised features of the un-augmented images.

    Under torchrun (``dist``) rank r embeds one contiguous slice of the pool and every rank returns
    the gathered (n, d) features; every rank must hold the same model.
    """
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    with reproducible_kernels(dev):
        return _embed_images(model, images, layer=layer, batch=batch, dev=dev, loader=loader, dist=dist)


@torch.no_grad()
def _embed_images(model: MoCo, images, *, layer: str, batch: int, dev: torch.device, loader: LoaderConfig | None,
                  dist: DistInfo | None) -> np.ndarray:
    info = dist or SINGLE
    model.eval()
    src = images if isinstance(images, PixelSource) else PixelSource(images, dev, loader,
                                                                     local_world=info.local_world_size)
    start, stop, counts = shard(len(src), info)
    rows = [torch.arange(s, min(s + batch, stop)) for s in range(start, stop, batch)]
    out = []
    for xb in src.batches(rows):
        x = normalize(xb.float().div_(255))
        with _autocast(dev):
            out.append(model.embed(_cl(x, dev), layer).float())
    if out:
        local = torch.cat(out)                                                # (stop - start, d)
    else:  # this rank's slice is empty (fewer images than ranks): its width from a dummy image
        probe = torch.zeros((1, *src.shape[1:]), device=dev)
        local = model.embed(_cl(normalize(probe), dev), layer).float()[:0]
    if info.active:
        local = gather_rows(local, counts)                                    # (n, d)
    return local.cpu().numpy().astype(np.float32)


def compute_features(images: np.ndarray, *, seed: int = 0, settings: MocoConfig | None = None,
                     device: str | torch.device | None = None, cache_dir: str | Path | None = None,
                     content_key: str | None = None, ids: list[str] | None = None,
                     grayscale: bool | None = None, resume: bool = False, use_cache: bool = True,
                     progress: bool = True, loader: LoaderConfig | None = None,
                     dist: DistInfo | None = None,
                     need_confidence: bool = False) -> tuple[np.ndarray, dict[str, Any]]:
    """Features for a pool of (n, 3, S, S) uint8 images, trained from scratch with MoCo v2.

    Returns (features (n, d) float32, info) where info holds the training log, the cache key,
    whether the cache was hit (``cache_hit``) and whether MoCo trained in this call (``trained``: not
    when only another layer of a cached training was embedded), and ``info["confidence"]``: (n,)
    float32, each image's mean probability of finding its positive during training
    (:meth:`MoCo.confidence`), stored as confidence.npy beside the features; None for a cached result
    made before it was recorded, unless ``need_confidence``, which retrains such a result. With
    ``use_cache`` a finished result for the same content, seed and settings is loaded instead of
    retrained; ``resume`` continues an interrupted training.
    ``images`` may be a memmap; ``loader`` says how the pixels are read (speed and memory only).
    Under torchrun (``dist``) every rank calls this with the same arguments: all train and embed their
    shares, only rank 0 writes the cache, and every rank returns the features.
    """
    cfg = settings or MocoConfig()
    if images.shape[-1] != cfg.image_size or images.shape[-2] != cfg.image_size:
        raise ValueError(f"images are {images.shape[-2]}×{images.shape[-1]} px but settings say "
                         f"image_size={cfg.image_size}")
    dev = pick_device(device)
    info = dist or SINGLE
    if grayscale is None:
        grayscale = is_grayscale(images)
    key = cache_key(content_key or array_content_key(images), cfg, seed, info.world_size)
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = folder / key
    layer = cfg.feature_layer
    feats_path = folder / ("features.npy" if layer == "backbone" else f"features-{layer}.npy")
    log_path, conf_path, enc_path = folder / "train.json", folder / "confidence.npy", folder / "encoder.pt"
    n = images.shape[0]

    def cached_confidence() -> np.ndarray | None:   # None when absent or not one value per image
        return np.load(conf_path) if conf_path.exists() and np.load(conf_path, mmap_mode="r").shape == (n,) else None

    cached_training = use_cache and log_path.exists() and (not need_confidence or cached_confidence() is not None)
    hit = cached_training and feats_path.exists() and np.load(feats_path, mmap_mode="r").shape[0] == n
    # the training is cached but not this layer's features: embed them with the kept encoder
    encoder = _cached_encoder(enc_path) if cached_training and not hit and info.is_main else None
    hit, reuse = broadcast_object((hit, encoder is not None), info)  # rank 0 decides for every rank
    if hit:
        if info.is_main:  # a run killed after caching its result left its checkpoint behind
            (folder / "checkpoint.pt").unlink(missing_ok=True)
            remove_dead_temp_files(folder)
        result = _for_layer(json.loads(log_path.read_text()), layer)
        if info.is_main:   # a reused encoder that had not learnt is as weak as on the run that trained it
            from coldseg.features.quality import warn_if_untrained

            warn_if_untrained(result["feature_check"])
        return np.load(feats_path), {"cache_key": key, "cache_hit": True, "trained": False,
                                     "cache_dir": str(folder), **result, "confidence": cached_confidence()}
    folder.mkdir(parents=True, exist_ok=True)
    if info.is_main:  # temporaries of killed runs (checkpoint.pt.tmp<pid> is a whole checkpoint)
        remove_dead_temp_files(folder)
    src = PixelSource(images, dev, loader, local_world=info.local_world_size)
    if reuse:
        model = initial_model(cfg, n, seed)
        state = encoder if encoder is not None else _cached_encoder(enc_path)    # other ranks read it here
        if state is None:
            raise RuntimeError(f"rank {info.rank} cannot read {enc_path}, which rank 0 read: every rank must "
                               "see the same --cache-dir (a shared file system)")
        model.encoder_q.load_state_dict(state)
        model.to(dev)
        result = json.loads(log_path.read_text())
        conf = cached_confidence()
    else:
        model, log = train_moco(src, cfg, seed=seed, grayscale=grayscale, device=dev,
                                checkpoint=folder / "checkpoint.pt", resume=resume, progress=progress, dist=dist)
        result = {"log": log, "grayscale": grayscale, "feature_checks": {}}
        conf = model.confidence()                                                  # (n,)
    feats = embed_images(model, src, layer=layer, device=dev, dist=dist)
    if info.is_main:   # label-free: do augmented views stay neighbours? (coldseg.features.quality)
        from coldseg.features.quality import feature_check

        result.setdefault("feature_checks", {})[layer] = feature_check(model, images, cfg, seed=seed, device=dev)
    if use_cache and info.is_main:
        if not reuse:
            atomic_write(conf_path, lambda tmp: np.save(tmp, conf), suffix=".npy")
            atomic_write(enc_path, lambda tmp: torch.save(model.encoder_q.state_dict(), tmp), suffix=".pt")
        atomic_write(feats_path, lambda tmp: np.save(tmp, feats), suffix=".npy")
        if ids is not None:
            atomic_write_bytes(folder / "ids.txt", ("\n".join(ids) + "\n").encode("utf-8", "surrogateescape"))
        atomic_write_bytes(log_path, json.dumps(result, indent=1).encode())
        # the checkpoint only serves --resume of an unfinished training: drop it (~140 MB at width 64)
        (folder / "checkpoint.pt").unlink(missing_ok=True)
    return feats, {"cache_key": key, "cache_hit": False, "trained": not reuse, "cache_dir": str(folder),
                   **_for_layer(result, layer),
                   "confidence": conf}


def _cached_encoder(path: Path) -> dict[str, torch.Tensor] | None:
    """The query encoder's weights kept by a finished training, or None when there are none; a damaged
    file is reported and left to be replaced by training again (it is only a cache)."""
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated, not a checkpoint, ...: any of them means "train again"
        warnings.warn(f"{path} could not be read ({type(e).__name__}: {e}); training the encoder again, which "
                      "replaces it", stacklevel=3)
        return None


def _for_layer(result: dict[str, Any], layer: str) -> dict[str, Any]:
    """train.json's content as compute_features returns it: the log, and ``feature_check`` of ``layer``."""
    out = {k: v for k, v in result.items() if k != "feature_checks"}
    out["feature_check"] = result.get("feature_checks", {}).get(layer)
    return out
