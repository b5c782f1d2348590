"""Pool features for a benchmark: computed once per (pool, seed), cached in the output folder.

Features are label-free, so every one-shot strategy of a seed selects from the same matrix.
``moco`` is the project's self-supervised encoder (:func:`coldseg.features.embed.compute_features`);
``pixels`` (down-sampled pixels, standardised, PCA) is a cheap stand-in for tests, tiny CPU runs
and a "no representation learning" baseline.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from coldseg.io.atomic import atomic_write

#: (pool images (n, 3, S, S) uint8, seed) -> (n, d) features, or (features, {name: (n,) side array})
#: where the method records per-image side arrays (MoCo's "confidence")
FeaturesFn = Callable[[np.ndarray, int], "np.ndarray | tuple[np.ndarray, dict[str, np.ndarray]]"]


def pixel_features(images: np.ndarray, seed: int = 0, *, grid: int = 8, dim: int = 32) -> np.ndarray:
    """(n, 3, S, S) uint8 -> (n, min(dim, n, 3·grid²)) float32: mean colour of each cell of a
    ``grid`` × ``grid`` partition, columns standardised, projected on the top principal axes.

    Deterministic (SVD); ``seed`` is accepted for the FeaturesFn signature and unused.
    """
    x = np.asarray(images, dtype=np.float32) / 255.0                    # (n, 3, S, S)
    n, c, h, w = x.shape
    ys = np.linspace(0, h, grid + 1).astype(int)
    xs = np.linspace(0, w, grid + 1).astype(int)
    cells = [x[:, :, ys[i]:ys[i + 1], xs[j]:xs[j + 1]].mean(axis=(2, 3))
             for i in range(grid) for j in range(grid)]                 # grid² × (n, 3)
    f = np.concatenate(cells, axis=1).astype(np.float64)                # (n, 3·grid²)
    f -= f.mean(axis=0)
    sd = f.std(axis=0)
    f /= np.where(sd > 0, sd, 1.0)
    k = min(dim, n, f.shape[1])
    u, s, _ = np.linalg.svd(f, full_matrices=False)                     # (n, r), (r,)
    return (u[:, :k] * s[:k]).astype(np.float32)                        # (n, k)


def moco_features_fn(*, image_size: int, epochs: int | None, cache_dir: Path, device: str | None,
                     progress: bool, batch_size: int | None = None, min_steps: int | None = None,
                     layer: str = "head", candidates: str | None = None) -> FeaturesFn:
    """The project's MoCo v2 features (imported lazily); trained per seed, cached in ``cache_dir``.
    ``layer``: 'head' (the projection head's output) or 'backbone' (the pooled ResNet output before it).
    ``candidates``: the eq. 7 candidate set ('none' turns the rule off; None: MocoConfig's default)."""

    def fn(images: np.ndarray, seed: int) -> np.ndarray:
        from coldseg.features.embed import compute_features
        from coldseg.features.train import MocoConfig

        given = {"epochs": epochs, "batch_size": batch_size, "min_steps": min_steps}
        cfg = MocoConfig(image_size=image_size, feature_layer=layer,
                         **{k: int(v) for k, v in given.items() if v is not None},
                         **({} if candidates is None else {"candidates": candidates}))
        # resume=True: a sweep stopped during MoCo continues from the last epoch's checkpoint (the
        # cache key holds every setting, so only the same training can be resumed)
        feats, info = compute_features(images, seed=seed, settings=cfg, device=device, cache_dir=cache_dir,
                                       progress=progress, resume=True, need_confidence=True)
        return feats, {"confidence": info.get("confidence")}

    return fn


def side_path(path: Path, name: str) -> Path:
    """Where ``cached_features`` keeps side array ``name`` of the features at ``path``: moco-seed0.confidence.npy."""
    return path.with_name(f"{path.stem}.{name}.npy")


def cached_features(fn: FeaturesFn, images: np.ndarray, seed: int, path: Path,
                    needs: tuple[str, ...] = ()) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``fn(images, seed)``, stored at ``path`` (.npy; side arrays beside it, see :func:`side_path`) and
    loaded from there on the next call. Returns (features (n, d), side arrays by name).

    needs: side arrays the caller's strategies read; a folder whose cached features lack one is refused
    (retraining would change the features other strategies of the folder were scored on).
    """
    n = len(images)
    if path.exists():
        feats = np.load(path)
        if feats.ndim == 2 and feats.shape[0] == n:
            side = {k: np.load(side_path(path, k)) for k in needs if side_path(path, k).exists()}
            for k, v in side.items():
                if v.shape != (n,):
                    raise ValueError(f"{side_path(path, k)} holds {v.shape} values for {n} pool images: it belongs to "
                                     f"other features; delete it and {path.name} to recompute both")
            missing = [k for k in needs if k not in side]
            if missing:
                raise ValueError(f"{path} was computed before {', '.join(missing)} was recorded beside it; the "
                                 "strategies that read it need a new --out folder (retraining here would change "
                                 "the features the folder's other runs used)")
            return feats, side
    out = fn(images, seed)
    feats, side = out if isinstance(out, tuple) else (out, {})
    feats = np.asarray(feats)
    if feats.ndim != 2 or feats.shape[0] != n:
        raise ValueError(f"features function returned shape {feats.shape} for {n} images; "
                         "it must return (n_images, n_features)")
    side = {k: np.asarray(v) for k, v in side.items() if v is not None}
    for k, v in side.items():
        if v.shape != (n,):
            raise ValueError(f"features function returned {k!r} of shape {v.shape}; it must be ({n},)")
    missing = [k for k in needs if k not in side]
    if missing:
        raise ValueError(f"these features do not record {', '.join(missing)}, which a requested strategy reads; "
                         "use --features moco or moco-backbone")
    path.parent.mkdir(parents=True, exist_ok=True)
    for k, v in side.items():    # before the features: their presence marks a complete entry
        atomic_write(side_path(path, k), lambda tmp, v=v: np.save(tmp, v), suffix=".npy")
    atomic_write(path, lambda tmp: np.save(tmp, feats), suffix=".npy")
    return feats, side
