"""Bring-your-own features: embeddings computed elsewhere (e.g. a foundation model).

Accepted files:
- ``.npz`` with arrays ``features`` (n, d) and ``ids`` (n,) strings;
- ``.npy`` (n, d) with the ids one per line in ``feature_ids.txt`` beside it (what ``coldseg embed``
  writes) or in ``<name>.ids.txt``; without an ids file the rows must be in the pool's sorted id order
  and as many as the pool's readable, distinct images (a warning says that the order is assumed).

Any other file (text, CSV, a pickle) is refused by its first bytes, before numpy tries to read it.
"""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np


class FeaturesError(ValueError):
    """A features file that cannot be matched to the pool."""


def to_float32(X: np.ndarray, source: str) -> np.ndarray:
    """X as float32, refusing finite values that float32 cannot hold (they would become inf).

    NaN/inf already in X pass through: the selectors name those rows.
    """
    X = np.asarray(X)
    if X.dtype.kind not in "fiu":
        raise FeaturesError(f"features from {source} must be numbers; got dtype {X.dtype}")
    if X.dtype.kind == "f" and X.dtype.itemsize > 4:
        big = np.isfinite(X) & (np.abs(X) > np.finfo(np.float32).max)
        if big.any():
            rows = np.flatnonzero(big.any(axis=1) if X.ndim == 2 else big)
            shown = ", ".join(map(str, rows[:5])) + (" ..." if len(rows) > 5 else "")
            raise FeaturesError(f"features from {source} exceed the float32 range (|value| > 3.4e38) in "
                                f"{len(rows)} row(s): {shown}; rescale them (any common factor keeps the picks)")
    return X.astype(np.float32)


def read_ids(path: Path) -> list[str]:
    return [ln for ln in path.read_text("utf-8", "surrogateescape").splitlines() if ln]


def load_features(path: str | Path, pool_ids: list[str]) -> np.ndarray:
    """Rows of the features file for ``pool_ids``, in that order: (len(pool_ids), d) float32."""
    path = Path(path)
    if not path.is_file():
        raise FeaturesError(f"features file {str(path)!r} does not exist")
    ids: list[str] | None = None
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
        npz = magic[:4] == b"PK\x03\x04"  # a zip archive: .npz; a .npy starts with \x93NUMPY
        if magic != b"\x93NUMPY" and not npz:
            raise FeaturesError(f"{str(path)!r} is not a NumPy .npy or .npz file; save the features with "
                                "numpy.save (and their ids in feature_ids.txt) or numpy.savez(features=, ids=)")
        if npz:
            with np.load(path, allow_pickle=False) as z:
                if "features" not in z:
                    raise FeaturesError(f"{path} holds no array named 'features' (found: {', '.join(z.files)})")
                X = z["features"]
                ids = [str(i) for i in z["ids"]] if "ids" in z else None
        else:
            X = np.load(path, allow_pickle=False)
            for cand in (path.with_name("feature_ids.txt"), path.with_suffix(".ids.txt")):
                if cand.exists():
                    ids = read_ids(cand)
                    break
    except (OSError, ValueError) as e:
        if isinstance(e, FeaturesError):
            raise
        raise FeaturesError(f"cannot read features file {str(path)!r}: {e}") from None
    if X.ndim != 2:
        raise FeaturesError(f"features in {path} must be 2-D (n_images, n_features); got shape {X.shape}")
    if ids is None:
        if X.shape[0] != len(pool_ids):
            raise FeaturesError(f"{path} has {X.shape[0]} rows but the pool has {len(pool_ids)} images and "
                                "no ids file was found (write feature_ids.txt beside it, one id per line)")
        where = ("no array named 'ids' in it" if npz else
                 f"no {path.with_name('feature_ids.txt').name} or {path.with_suffix('.ids.txt').name} beside it")
        warnings.warn(f"{path.name} has no ids ({where}): its rows are taken to be the pool's images in sorted "
                      "id order; write the ids to be sure (coldseg embed writes feature_ids.txt)", stacklevel=3)
        return to_float32(X, str(path))
    if len(ids) != X.shape[0]:
        raise FeaturesError(f"{path} has {X.shape[0]} rows but its ids list has {len(ids)} entries")
    row = {i: r for r, i in enumerate(ids)}
    missing = [i for i in pool_ids if i not in row]
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise FeaturesError(f"{len(missing)} pool image(s) have no row in {path}: {shown}")
    extra = len(set(ids) - set(pool_ids))
    if extra:
        print(f"coldseg: {extra} row(s) of {path.name} match no readable pool image and are ignored",
              file=sys.stderr)
    return to_float32(X[[row[i] for i in pool_ids]], str(path))
