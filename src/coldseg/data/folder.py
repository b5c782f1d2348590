"""Walking an images folder: which files are images, what their ids are, and what is left out.

The rules for folders as they come are listed in :mod:`coldseg.data.pool`'s docstring; this module
holds the walk itself (:func:`list_folder`), the id checks (:func:`name_problem`) and the report of
what was left out (:func:`announce`).
"""
from __future__ import annotations

import json
import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
#: the pool also reads GIFs (first frame); image+mask pairs keep IMAGE_EXTENSIONS
POOL_EXTENSIONS = IMAGE_EXTENSIONS + (".gif",)
#: image formats the pool does not read: left out with a warning (other non-image files are left out silently)
UNREAD_IMAGE_EXTENSIONS = (".dcm", ".dicom", ".webp", ".jp2", ".j2k", ".nii", ".nii.gz", ".heic", ".heif")


class PoolError(ValueError):
    """The folder cannot give a usable pool (missing, not a folder, no readable image)."""


@dataclass
class Listing:
    """What walking the folder found (see :func:`list_folder`)."""

    images: list[str]               # ids of image files with usable names, sorted
    other: int = 0                  # files without an image extension
    hidden: int = 0                 # hidden files and folders left out
    unfollowed: list[str] = field(default_factory=list)   # symbolic links to folders (not walked)
    bad: list[dict] = field(default_factory=list)         # {"id", "reason"}: bad names, unlistable folders
    outputs: list[str] = field(default_factory=list)      # ids of files an earlier coldseg run wrote
    unread: dict[str, int] = field(default_factory=dict)  # image formats not read (UNREAD_IMAGE_EXTENSIONS): count


def printable(rel: str) -> str:
    """``rel`` safe for UTF-8 text: bytes that are not UTF-8 shown as ``\\xNN`` (they arrive from the
    file system as lone surrogates, which no UTF-8 writer accepts)."""
    return os.fsencode(rel).decode("utf-8", "backslashreplace") if _has_surrogates(rel) else rel


def _has_surrogates(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _has_controls(text: str) -> bool:
    """A control character, or anything str.splitlines() splits on (U+2028, U+0085, ...)."""
    return any(ord(c) < 32 or ord(c) == 127 for c in text) or text.splitlines() != [text]


def shown(text: str) -> str:
    """``text`` quoted for a message: printable() of it, escaped like repr() when it holds controls."""
    text = printable(text)
    return repr(text) if _has_controls(text) else f"'{text}'"


def name_problem(rel: str) -> str:
    """Why the id ``rel`` cannot be written to the outputs ('' when it can)."""
    if _has_surrogates(rel):
        return (f"file name is not valid UTF-8 ({shown(rel)}); rename it in UTF-8 so that its id can "
                "be written to the CSV/JSON outputs")
    if _has_controls(rel):
        return (f"file name {shown(rel)} holds a line break or control character; rename it (ids are "
                "written one per line)")
    return ""


def list_folder(root: str | os.PathLike) -> Listing:
    """Walk ``root``: image ids (sorted) and everything left out, with reasons (module docstring)."""
    root = Path(root)
    if not root.exists():
        raise PoolError(f"images folder {str(root)!r} does not exist")
    if not root.is_dir():
        raise PoolError(f"{str(root)!r} is not a folder; pass the folder that holds the images")
    where = os.fspath(root.resolve())
    if name_problem(where):  # outputs hold absolute paths: fail now, not after training
        raise PoolError(f"the images folder's path {shown(where)} is not valid UTF-8 or holds a line "
                        "break or control character; rename the folder (the outputs list absolute paths)")
    if (root / "images").is_dir() and (root / "masks").is_dir():  # a benchmark dataset: masks are no pool
        raise PoolError(f"{str(root)!r} holds an 'images' and a 'masks' folder (a dataset for `coldseg "
                        f"benchmark`); its masks would enter the pool: pass {str(root / 'images')!r} as IMAGES_DIR")
    out = Listing([])

    def unlistable(err: OSError) -> None:
        rel = Path(err.filename).relative_to(root).as_posix() if err.filename else "?"
        out.bad.append({"id": printable(rel) + "/",
                        "reason": f"folder cannot be listed: {type(err).__name__}: {err.strerror or err}"})

    for dirpath, dirnames, filenames in os.walk(root, onerror=unlistable, followlinks=False):
        written = _coldseg_outputs(Path(dirpath)) if "manifest.json" in filenames else set()
        out.hidden += sum(d.startswith(".") for d in dirnames) + sum(f.startswith(".") for f in filenames)
        links = [d for d in dirnames if not d.startswith(".") and os.path.islink(os.path.join(dirpath, d))]
        out.unfollowed += [printable(Path(dirpath, d).relative_to(root).as_posix()) for d in links]
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in links)
        for f in filenames:
            if f.startswith("."):
                continue
            if f in written:  # --out inside the images folder: never read a run's figures as images
                out.outputs.append(printable(Path(dirpath, f).relative_to(root).as_posix()))
                continue
            if not f.lower().endswith(POOL_EXTENSIONS):
                out.other += 1
                ext = next((e for e in UNREAD_IMAGE_EXTENSIONS if f.lower().endswith(e)), None)
                if ext:
                    out.unread[ext] = out.unread.get(ext, 0) + 1
                continue
            rel = Path(dirpath, f).relative_to(root).as_posix()
            problem = name_problem(rel)
            if problem:
                out.bad.append({"id": printable(rel), "reason": problem})
            else:
                out.images.append(rel)
    out.images.sort()
    out.unfollowed.sort()
    out.outputs.sort()
    return out


def _coldseg_outputs(folder: Path) -> set[str]:
    """Names listed in ``folder/manifest.json`` when a coldseg run wrote it (a dict with "coldseg" and
    "files"), else an empty set. Unreadable or foreign manifests are ignored."""
    try:
        m = json.loads((folder / "manifest.json").read_text("utf-8"))
    except (OSError, ValueError):
        return set()
    if not isinstance(m, dict) or "coldseg" not in m or not isinstance(m.get("files"), list):
        return set()
    return {f for f in m["files"] if isinstance(f, str) and "/" not in f}


def scan(root: str | os.PathLike) -> tuple[list[str], int]:
    """Relative paths of the usable image files below ``root`` (sorted), and the count of other files.

    Symbolic links to folders are not followed (no loops); hidden files and folders are skipped.
    """
    listing = list_folder(root)
    return listing.images, listing.other


def announce(listing: Listing, *, stacklevel: int = 2) -> list[dict]:
    """Say what the folder walk left out (stderr lines; a warning for unfollowed folder links).

    Returns the skipped entries ({"id", "reason"}) to start ``Pool.skipped`` with."""
    if listing.hidden:
        print(f"coldseg: left out {listing.hidden} hidden file(s)/folder(s) (names starting with '.')",
              file=sys.stderr)
    if listing.unfollowed:
        warnings.warn(f"{len(listing.unfollowed)} symbolic link(s) to folders not followed (their images are "
                      f"not in the pool): {names_shown(listing.unfollowed)}; link the files, or copy the folder",
                      stacklevel=stacklevel)
    if listing.unread:
        counts = ", ".join(f"{n} {ext}" for ext, n in sorted(listing.unread.items()))
        warnings.warn(f"left out {sum(listing.unread.values())} image file(s) in formats coldseg does not read "
                      f"({counts}); convert them to PNG or TIFF to include them", stacklevel=stacklevel)
    if listing.outputs:
        print(f"coldseg: left out {len(listing.outputs)} file(s) written by an earlier coldseg run inside the "
              f"images folder: {names_shown(listing.outputs)}", file=sys.stderr)
    for b in listing.bad:
        print(f"coldseg: skipped {shown(b['id'])}: {b['reason']}", file=sys.stderr)
    return list(listing.bad)


def names_shown(ids: list[str], at_most: int = 5) -> str:
    return ", ".join(ids[:at_most]) + (f" and {len(ids) - at_most} more" if len(ids) > at_most else "")
