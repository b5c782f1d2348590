"""The unlabeled pool: a folder of images -> stable ids, decoded pixels, and what was left out.

The id of an image is its path relative to the folder, with '/' separators. Unreadable files are
skipped and reported, never fatal; byte-identical duplicates are collapsed to their first id (in
sorted order) so that the same picture can never be picked twice.

Folders as they come (docs/reliability.md lists each case and its test):
* Ids never leave the folder: they are relative paths found by walking it, so no id is absolute or
  holds a '..' part. Symbolic links to *files* are followed, wherever they point (a pool is often a
  folder of links into a dataset); the id is the link's own path inside the folder. Symbolic links to
  *folders* are not followed (no loops, no walking into a whole disk); each one is named in a warning
  and in ``Pool.unfollowed``. A link that loops or dangles is an unreadable file: skipped, with reason.
* Hidden files and folders (names starting with '.': ``.DS_Store``, ``._x.png``, ``.thumbs/``) are left
  out; their number is in ``Pool.hidden`` and in one line on stderr.
* Images in formats the pool does not read (DICOM ``.dcm``/``.dicom``, ``.webp``, JPEG 2000, NIfTI,
  HEIC) are left out like any non-image file (counted in ``Pool.ignored``), but named in one warning
  with their count per format, so that a folder of scans is not silently half read.
* A folder holding both an ``images`` and a ``masks`` subfolder (a ``coldseg benchmark`` dataset) is
  refused with :class:`PoolError`: its masks would become pool images; the error names the
  ``images`` folder to pass instead.
* A file name that is not valid UTF-8, or that holds a line break or other control character, is
  skipped with a reason saying to rename it: ids go into UTF-8 CSV/JSON/Label Studio files and into
  one-id-per-line text files, which could not hold them faithfully. Spaces, commas, quotes, '%', '#'
  and any Unicode letter are fine (the writers quote them).
* A folder that cannot be listed (permissions) is skipped with a reason, as an unreadable file is. An
  images folder whose own absolute path is not UTF-8 (or holds a control character) is refused at once
  with :class:`PoolError`: the outputs list absolute paths.
* Files that an earlier coldseg run wrote (listed in a coldseg ``manifest.json`` beside them, e.g. the
  report's map.png when ``--out`` lies inside the images folder) are never read as images: left out,
  counted in ``Pool.outputs`` and in one line on stderr.
* Pixels are those a viewer shows: the EXIF orientation is applied (a phone photo stored sideways
  comes out upright); animated GIFs and multi-page TIFFs give their first frame, named in a warning
  and in ``Pool.multi_frame``; 16-bit, palette (with or without transparency), CMYK, grey+alpha and
  RGBA images are converted as :func:`to_uint8` says.
* An image with more pixels than ``PIL.Image.MAX_IMAGE_PIXELS`` (Pillow's decompression-bomb guard,
  89 million by default) is skipped with a reason naming its size, before its pixels are decoded.
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
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm.auto import tqdm

from coldseg.data.folder import (  # noqa: F401 - re-exported: the pool's public names stay here
    IMAGE_EXTENSIONS, POOL_EXTENSIONS, Listing, PoolError, announce, list_folder, name_problem, names_shown,
    printable, scan, shown,
)

_EXIF_ORIENTATION = 0x0112


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
    hidden: int = 0                 # hidden files and folders left out (names starting with '.')
    unfollowed: list[str] = field(default_factory=list)   # symbolic links to folders, not followed
    multi_frame: list[dict] = field(default_factory=list)  # {"id", "frames"}: first frame used
    outputs: list[str] = field(default_factory=list)      # files of an earlier coldseg run, left out

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


def to_uint8(im: Image.Image) -> tuple[np.ndarray, bool]:
    """Any PIL image -> (H, W, 3) uint8 and whether it had a single channel.

    16-bit and float images are stretched from their own min..max to 0..255 (a 12-bit X-ray stored in
    16 bits would otherwise be nearly black); RGBA and LA drop alpha (transparent pixels keep their
    colour); palette images (with or without transparency) take their palette colours; CMYK becomes RGB.
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
    if im.mode in ("P", "PA"):  # via RGBA: Pillow's direct P -> RGB warns on per-entry transparency
        im = im.convert("RGBA")
    return np.asarray(im.convert("RGB")), False


def load_image(path: Path, size: int, *, upright: bool = False) -> tuple[np.ndarray, bool]:
    """Decode one file to (3, size, size) uint8 (squashed to a square, as segmentation sets are).

    upright: apply the EXIF orientation, as viewers do (the pool does; image+mask pairs keep the
    stored orientation, the one their size check and masks are compared with).
    """
    arr, gray, _ = decode(path, size, upright=upright)
    return arr, gray


def decode(path: Path, size: int, *, upright: bool = True,
           max_pixels: int | None = None) -> tuple[np.ndarray, bool, int]:
    """(3, size, size) uint8, single channel?, number of frames. The first frame of a multi-frame file.

    max_pixels: refuse (DecompressionBombError) an image with more pixels, from its header alone.
    """
    with Image.open(path) as im:
        frames = int(getattr(im, "n_frames", 1) or 1)
        w, h = im.size
        if max_pixels and w * h > max_pixels:
            raise Image.DecompressionBombError(
                f"{w}x{h} = {w * h} pixels exceeds the decompression-bomb limit of {max_pixels} "
                "(PIL.Image.MAX_IMAGE_PIXELS); raise that limit if you trust the file")
        im.seek(0)  # first frame of animated / multi-page files
        im.load()
        if upright and im.getexif().get(_EXIF_ORIENTATION, 1) != 1:
            arr, gray = to_uint8(ImageOps.exif_transpose(im))
        else:
            arr, gray = to_uint8(im)
    pil = Image.fromarray(arr)
    if pil.size != (size, size):
        pil = pil.resize((size, size), Image.BILINEAR, reducing_gap=2.0)
    return np.asarray(pil).transpose(2, 0, 1).copy(), gray, frames


def read_one(args: tuple[Path, str, int]) -> tuple[str, str | None, np.ndarray | None, bool, str, int]:
    """(id, sha256, (3, S, S) pixels, single channel?, '' or why it was skipped, frames)."""
    root, rel, size = args
    path = root / rel
    try:
        data = path.read_bytes()
        if not data:
            return rel, None, None, False, "empty file (0 bytes)", 0
        digest = hashlib.sha256(data).hexdigest()
        arr, gray, frames = decode(path, size, upright=True, max_pixels=Image.MAX_IMAGE_PIXELS)
        return rel, digest, arr, gray, "", frames
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as e:
        return rel, None, None, False, f"{type(e).__name__}: {e}".strip(), 0


def list_pool_files(root: str | os.PathLike, size: int, *, stacklevel: int = 3):
    """(root as Path, its listing, the files left out so far) for a pool read at ``size`` px.

    Checks the size, reports what the listing left out, and raises :class:`PoolError` when no image
    file is left to read.
    """
    if size < 8:
        raise ValueError(f"image size {size} is too small; use at least 8 pixels")
    root = Path(root)
    listing = list_folder(root)
    skipped = announce(listing, stacklevel=stacklevel)
    if not listing.images and skipped:
        raise PoolError(f"nothing usable in {str(root)!r}: {len(skipped)} image file(s)/folder(s) left out, "
                        f"e.g. {shown(skipped[0]['id'])}: {skipped[0]['reason']}")
    if not listing.images:
        raise PoolError(f"no image files ({', '.join(POOL_EXTENSIONS)}) found in {str(root)!r}")
    return root, listing, skipped


def report_read(root: Path, n_files: int, n_kept: int, unreadable: list[dict], duplicates: list[dict],
                multi: list[dict], *, stacklevel: int = 3) -> None:
    """Say what reading the listed files left out (stderr lines, a warning for multi-frame files);
    raise :class:`PoolError` when none of the ``n_files`` could be read."""
    for s in unreadable:
        print(f"coldseg: skipped unreadable {s['id']}: {s['reason']}", file=sys.stderr)
    if not n_kept:
        raise PoolError(f"none of the {n_files} image files in {str(root)!r} could be read")
    if duplicates:
        print(f"coldseg: {len(duplicates)} byte-identical duplicate(s) left out (kept the first of each)",
              file=sys.stderr)
    if multi:
        warnings.warn(f"{len(multi)} file(s) hold several frames or pages; only the first is used: "
                      f"{names_shown([m['id'] for m in multi])}", stacklevel=stacklevel)


def load_pool(root: str | os.PathLike, size: int = 128, *, workers: int | None = None,
              progress: bool = True) -> Pool:
    """Read every image below ``root`` at ``size`` × ``size``; skip what cannot be read.

    Raises :class:`PoolError` when the folder is missing or holds no readable image.
    """
    root, listing, skipped = list_pool_files(root, size, stacklevel=4)
    rels = listing.images
    workers = workers or min(8, (os.cpu_count() or 1) + 2)
    ids, digests, arrays, grays, dups, multi, unreadable = [], [], [], [], [], [], []
    seen: dict[str, str] = {}
    # Pillow warns (then refuses) past MAX_IMAGE_PIXELS; decode() refuses first with a clearer reason,
    # so the warning is silenced once here, in this thread (catch_warnings is not thread-safe)
    with warnings.catch_warnings(), ThreadPoolExecutor(workers) as ex:
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        results = ex.map(read_one, [(root, r, size) for r in rels])
        for rel, digest, arr, gray, reason, frames in tqdm(results, total=len(rels), desc="reading images",
                                                            unit="img", disable=not progress, leave=False):
            if arr is None:
                unreadable.append({"id": rel, "reason": reason})
                continue
            if digest in seen:
                dups.append({"id": rel, "same_as": seen[digest]})
                continue
            seen[digest] = rel
            ids.append(rel)
            digests.append(digest)
            arrays.append(arr)
            grays.append(gray)
            if frames > 1:
                multi.append({"id": rel, "frames": frames})
    report_read(root, len(rels), len(ids), unreadable, dups, multi)
    return Pool(root, ids, np.stack(arrays), digests, all(grays), skipped + unreadable, dups, listing.other,
                listing.hidden, listing.unfollowed, multi, listing.outputs)
