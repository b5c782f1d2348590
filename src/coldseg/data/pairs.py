"""Image + mask pairs for segmentation training and testing: ``DATA_DIR/images`` and ``DATA_DIR/masks``.

Every image ``images/<id>.<ext>`` needs a mask ``masks/<id>.png`` (and the other way round). Masks are
8-bit, 0 = background and 255 (or 1) = foreground; with ``multiclass=True`` the pixel values are class
ids 0..C-1. Everything is validated before anything trains: a bad folder raises :class:`PairError`
naming the files and the fix, instead of failing an hour into a benchmark.

Images are squashed to ``size`` × ``size`` with bilinear filtering (as :mod:`coldseg.data.pool` does);
masks with NEAREST, so class ids never blend.
"""
from __future__ import annotations

import os
import re
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from coldseg.data.pool import IMAGE_EXTENSIONS, load_image

MASK_EXTENSIONS = (".png",)
_TILE = re.compile(r"^(?P<group>.+)_r\d+c\d+$")   # aerial tiles: <source image>_r<row>c<col>
_SHOW = 10                                        # names listed in an error message


class PairError(ValueError):
    """The data folder cannot give valid image/mask pairs; the message names the files and the fix."""


@dataclass
class PairSet:
    root: Path
    ids: list[str]          # file stems, sorted
    images: np.ndarray      # (n, 3, S, S) uint8
    masks: np.ndarray       # (n, S, S) uint8 class ids: 0/1 binary, 0..C-1 multiclass
    groups: list[str]       # source-image group of each id (tiles of one image share a group)
    n_classes: int          # 2 for binary

    def __len__(self) -> int:
        return len(self.ids)


def group_of(stem: str) -> str:
    """``Tile3_image_part_004_r1c2`` -> ``Tile3_image_part_004``; any other id is its own group."""
    m = _TILE.match(stem)
    return m.group("group") if m else stem


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOW])
    return shown + (f" ... and {len(names) - _SHOW} more" if len(names) > _SHOW else "")


def _stems(folder: Path, exts: tuple[str, ...], what: str) -> dict[str, Path]:
    """stem -> file for the files of ``folder`` with one of ``exts`` (hidden files skipped)."""
    found: dict[str, list[Path]] = {}
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or not p.is_file() or not p.name.lower().endswith(exts):
            continue
        found.setdefault(p.stem, []).append(p)
    clashes = [f"{s} ({', '.join(q.name for q in ps)})" for s, ps in found.items() if len(ps) > 1]
    if clashes:
        raise PairError(f"{what} folder {str(folder)!r} holds several files with the same name: "
                        f"{_listing(clashes)}; keep one file per id")
    return {s: ps[0] for s, ps in found.items()}


def _read_mask(path: Path) -> np.ndarray:
    """(H, W) uint8 pixel values of a mask file; single-channel or grey RGB(A)."""
    with Image.open(path) as im:
        im.load()
        if im.mode in ("L", "P", "1"):
            return np.asarray(im.convert("L") if im.mode == "1" else im, dtype=np.uint8)
        if im.mode in ("RGB", "RGBA", "LA"):
            a = np.asarray(im.convert("RGB"))
            if not (np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 0], a[..., 2])):
                raise PairError(f"mask {str(path)!r} is a colour image; save masks as single-channel "
                                f"PNGs of class ids (0 = background)")
            return a[..., 0].copy()
        if im.mode.startswith("I"):
            a = np.asarray(im)
            if a.min() < 0 or a.max() > 255:
                raise PairError(f"mask {str(path)!r} holds values outside 0..255 ({int(a.min())}.."
                                f"{int(a.max())}); save masks as 8-bit PNGs of class ids")
            return a.astype(np.uint8)
        raise PairError(f"mask {str(path)!r} has pixel mode {im.mode!r}; save masks as 8-bit "
                        f"single-channel PNGs")


def _read_pair(args: tuple[Path, Path, int]) -> tuple[np.ndarray | None, np.ndarray | None, str]:
    """(image (3,S,S), raw mask (H,W), '') or (None, None, problem)."""
    img_path, mask_path, size = args
    try:
        with Image.open(img_path) as im:
            img_size = im.size                      # (W, H), header only
        image, _ = load_image(img_path, size)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        return None, None, f"unreadable image {img_path.name}: {type(e).__name__}: {e}"
    try:
        mask = _read_mask(mask_path)
    except PairError as e:
        return None, None, str(e)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        return None, None, f"unreadable mask {mask_path.name}: {type(e).__name__}: {e}"
    if (mask.shape[1], mask.shape[0]) != img_size:
        return None, None, (f"size mismatch: mask {mask_path.name} is {mask.shape[1]}x{mask.shape[0]} "
                            f"but image {img_path.name} is {img_size[0]}x{img_size[1]}")
    return image, mask, ""


def _resize_nearest(mask: np.ndarray, size: int) -> np.ndarray:
    if mask.shape == (size, size):
        return mask
    return np.asarray(Image.fromarray(mask).resize((size, size), Image.NEAREST))


def load_pairs(data_dir: str | os.PathLike, size: int = 128, *, multiclass: bool = False,
               progress: bool = True, masks_dir: str = "masks",
               workers: int | None = None) -> PairSet:
    """Read and validate every image/mask pair of ``data_dir`` at ``size`` × ``size``.

    ``masks_dir`` names the mask folder inside ``data_dir`` (e.g. ``"masks_multiclass"``).
    Binary masks may use {0, 255} or {0, 1}; both become 0/1. With ``multiclass=True`` values are
    class ids and ``n_classes`` = largest id + 1 (a set whose masks are all {0, 255} stays binary).
    Raises :class:`PairError` for a missing folder, unmatched files, unreadable files, a mask whose
    size differs from its image and (without ``multiclass``) a mask that is not binary.
    """
    if size < 8:
        raise ValueError(f"size={size} is too small; use at least 8 pixels")
    root = Path(data_dir)
    img_dir, mask_dir = root / "images", root / masks_dir
    for d, what in ((img_dir, "images"), (mask_dir, "masks")):
        if not d.is_dir():
            raise PairError(f"{what} folder {str(d)!r} not found; put the {what} in "
                            f"{str(root)!r}/{d.name}/ (<id>.png / <id>.jpg, one {what[:-1]} per id)")
    images = _stems(img_dir, IMAGE_EXTENSIONS, "images")
    masks = _stems(mask_dir, MASK_EXTENSIONS, "masks")
    no_mask = sorted(set(images) - set(masks))
    no_image = sorted(set(masks) - set(images))
    if no_mask:
        raise PairError(f"{len(no_mask)} image(s) in {str(img_dir)!r} have no mask "
                        f"{masks_dir}/<id>.png: {_listing(no_mask)}; add the masks or remove the images")
    if no_image:
        raise PairError(f"{len(no_image)} mask(s) in {str(mask_dir)!r} have no image: "
                        f"{_listing(no_image)}; add the images or remove the masks")
    ids = sorted(images)
    if not ids:
        raise PairError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in {str(img_dir)!r}")

    workers = workers or min(8, (os.cpu_count() or 1) + 2)
    imgs, raw, problems = [], [], []
    with ThreadPoolExecutor(workers) as ex:
        jobs = ex.map(_read_pair, [(images[i], masks[i], size) for i in ids])
        for image, mask, problem in tqdm(jobs, total=len(ids), desc="reading pairs", unit="pair",
                                         disable=not progress, leave=False):
            if problem:
                problems.append(problem)
            else:
                imgs.append(image)
                raw.append(mask)
    if problems:
        raise PairError(f"{len(problems)} pair(s) in {str(root)!r} cannot be used: "
                        f"{_listing(problems)}; fix or remove those files")

    value_sets = [np.unique(m) for m in raw]
    all_values = np.unique(np.concatenate(value_sets))
    binary_like = [set(v.tolist()) <= {0, 255} or set(v.tolist()) <= {0, 1} for v in value_sets]
    if not multiclass:
        bad = [f"{ids[i]} (values {_values(v)})" for i, v in enumerate(value_sets) if not binary_like[i]]
        if bad:
            raise PairError(f"{len(bad)} mask(s) are not binary: {_listing(bad)}; binary masks hold "
                            f"only 0 and 255 (or 0 and 1): threshold them, or pass multiclass=True "
                            f"if the values are class ids")
        n_classes = 2
    elif set(all_values.tolist()) <= {0, 255}:
        warnings.warn(f"multiclass=True but every mask in {str(mask_dir)!r} holds only 0 and 255; "
                      f"reading them as binary (255 -> class 1)", stacklevel=2)
        n_classes = 2
    else:
        n_classes = int(all_values.max()) + 1
        if n_classes < 2:
            warnings.warn(f"every mask in {str(mask_dir)!r} is all background", stacklevel=2)
            n_classes = 2
    out = np.empty((len(ids), size, size), np.uint8)
    for i, m in enumerate(raw):
        if n_classes == 2:
            m = (m > 0).astype(np.uint8)            # {0,255} or {0,1} -> {0,1}
        out[i] = _resize_nearest(m, size)
    if n_classes == 2 and not out.any():
        warnings.warn(f"every mask in {str(mask_dir)!r} is empty (no foreground pixel)", stacklevel=2)
    return PairSet(root, ids, np.stack(imgs), out, [group_of(i) for i in ids], n_classes)


def _values(v: np.ndarray) -> str:
    vals = v.tolist()
    return ", ".join(map(str, vals[:8])) + (", ..." if len(vals) > 8 else "")
