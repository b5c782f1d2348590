"""The unlabeled pool: a folder of images -> stable ids, decoded pixels, and what was left out.

The id of an image is its path relative to the folder, with '/' separators. Unreadable files are
skipped and reported, never fatal; byte-identical duplicates are collapsed to their first id (in
sorted order) so that the same picture can never be picked twice.
"""
from __future__ import annotations

import hashlib
import os
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


@dataclass
class Pool:
    root: Path
    ids: list[str]                  # relative paths, sorted, unique content
    images: np.ndarray              # (n, 3, S, S) uint8
    digests: list[str]              # sha256 of each file's bytes
    grayscale: bool                 # every readable image had a single channel
    skipped: list[dict] = field(default_factory=list)     # {"id", "reason"}
    duplicates: list[dict] = field(default_factory=list)  # {"id", "same_as"}
    ignored: int = 0                # files without an image extension

    def __len__(self) -> int:
        return len(self.ids)

    def path(self, i: int) -> Path:
        return self.root / self.ids[i]

    def content_key(self) -> str:
        """sha256 over (id, file digest) of every pool image: changes when any image changes."""
        h = hashlib.sha256()
        for i, d in zip(self.ids, self.digests):
            h.update(i.encode("utf-8", "surrogateescape") + b"\0" + d.encode() + b"\n")
        return h.hexdigest()


class PoolError(ValueError):
    """The folder cannot give a usable pool (missing, not a folder, no readable image)."""


def scan(root: str | os.PathLike) -> tuple[list[str], int]:
    """Relative paths of the image files below ``root`` (sorted), and the count of other files.

    Symbolic links to folders are not followed (no loops); hidden files and folders are skipped.
    """
    root = Path(root)
    if not root.exists():
        raise PoolError(f"images folder {str(root)!r} does not exist")
    if not root.is_dir():
        raise PoolError(f"{str(root)!r} is not a folder; pass the folder that holds the images")
    found, other = [], 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in filenames:
            if f.startswith("."):
                continue
            if f.lower().endswith(IMAGE_EXTENSIONS):
                found.append(Path(dirpath, f).relative_to(root).as_posix())
            else:
                other += 1
    return sorted(found), other


def to_uint8(im: Image.Image) -> tuple[np.ndarray, bool]:
    """Any PIL image -> (H, W, 3) uint8 and whether it had a single channel.

    16-bit and float images are stretched from their own min..max to 0..255 (a 12-bit X-ray stored in
    16 bits would otherwise be nearly black); RGBA and LA drop alpha; palette and CMYK become RGB.
    """
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        a = (a - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(a)
        g = a.round().astype(np.uint8)
        return np.repeat(g[:, :, None], 3, axis=2), True
    if im.mode in ("L", "LA", "1"):
        g = np.asarray(im.convert("L"))
        return np.repeat(g[:, :, None], 3, axis=2), True
    return np.asarray(im.convert("RGB")), False


def load_image(path: Path, size: int) -> tuple[np.ndarray, bool]:
    """Decode one file to (3, size, size) uint8 (squashed to a square, as segmentation sets are)."""
    with Image.open(path) as im:
        im.seek(0)  # first frame of animated / multi-page files
        im.load()
        arr, gray = to_uint8(im)
    pil = Image.fromarray(arr)
    if pil.size != (size, size):
        pil = pil.resize((size, size), Image.BILINEAR, reducing_gap=2.0)
    return np.asarray(pil).transpose(2, 0, 1).copy(), gray


def _read_one(args: tuple[Path, str, int]) -> tuple[str, str | None, np.ndarray | None, bool, str]:
    root, rel, size = args
    path = root / rel
    try:
        data = path.read_bytes()
        if not data:
            return rel, None, None, False, "empty file (0 bytes)"
        digest = hashlib.sha256(data).hexdigest()
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            arr, gray = load_image(path, size)
        return rel, digest, arr, gray, ""
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as e:
        return rel, None, None, False, f"{type(e).__name__}: {e}".strip()


def load_pool(root: str | os.PathLike, size: int = 128, *, workers: int | None = None,
              progress: bool = True) -> Pool:
    """Read every image below ``root`` at ``size`` × ``size``; skip what cannot be read.

    Raises :class:`PoolError` when the folder is missing or holds no readable image.
    """
    if size < 8:
        raise ValueError(f"image size {size} is too small; use at least 8 pixels")
    root = Path(root)
    rels, other = scan(root)
    if not rels:
        raise PoolError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) found in {str(root)!r}")
    workers = workers or min(8, (os.cpu_count() or 1) + 2)
    ids, digests, arrays, grays, skipped, dups = [], [], [], [], [], []
    seen: dict[str, str] = {}
    with ThreadPoolExecutor(workers) as ex:
        results = ex.map(_read_one, [(root, r, size) for r in rels])
        for rel, digest, arr, gray, reason in tqdm(results, total=len(rels), desc="reading images",
                                                    unit="img", disable=not progress, leave=False):
            if arr is None:
                skipped.append({"id": rel, "reason": reason})
                print(f"coldseg: skipped unreadable {rel}: {reason}", file=sys.stderr)
                continue
            if digest in seen:
                dups.append({"id": rel, "same_as": seen[digest]})
                continue
            seen[digest] = rel
            ids.append(rel)
            digests.append(digest)
            arrays.append(arr)
            grays.append(gray)
    if not ids:
        raise PoolError(f"none of the {len(rels)} image files in {str(root)!r} could be read")
    if dups:
        print(f"coldseg: {len(dups)} byte-identical duplicate(s) left out (kept the first of each)",
              file=sys.stderr)
    return Pool(root, ids, np.stack(arrays), digests, all(grays), skipped, dups, other)
