"""The pool's pixels decoded once into a file, and batches of them read by index.

:func:`load_pool_cached` gives the same :class:`~coldseg.data.pool.Pool` as
:func:`~coldseg.data.pool.load_pool`, but its ``images`` is a read-only ``np.memmap`` of
``<cache_dir>/decoded/<key>/images.npy`` (n, 3, S, S) uint8, so memory holds only the pages in use
(10^6 images at 128 px are 49 GB). Two passes over the folder:

1. hash every image file (threads): with the pool's ids these digests key the cache;
2. on a miss, decode and resize the distinct files (threads, tqdm) and append their rows to
   ``images.npy.partial``; ``progress.json`` records every finished chunk, so an interrupted decode
   resumes where it stopped. The rows of files that turn out unreadable are dropped by rewriting the
   fixed-size header; the file is renamed to ``images.npy`` and ``pool.json`` (ids, digests, what was
   skipped), written last, marks the entry valid. A folder without ``pool.json`` is never used.

The key hashes the ids, file digests, size, Pillow's version and the source of the decoder in
pool.py, so a change to any of them decodes anew. Batches are read from the file by
:mod:`coldseg.data.stream`.
"""
from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import PIL
from PIL import Image
from tqdm.auto import tqdm

from coldseg.data import pool as _pool
from coldseg.data.pool import Pool, PoolError, list_pool_files, read_one, report_read
from coldseg.io.atomic import atomic_write_bytes
from coldseg.io.lock import folder_lock

DECODED_VERSION = 1   # bump when the cached pixels would change for the same files
HEADER_BYTES = 128    # fixed .npy v1.0 header, so the shape can be rewritten in place
CHUNK = 1024          # images decoded between two progress records


# --- the cache ---------------------------------------------------------------------------------------
def _decoder_fingerprint() -> str:
    parts = [str(DECODED_VERSION), PIL.__version__]
    for name in ("decode", "load_image", "to_uint8", "read_one"):
        fn = getattr(_pool, name, None)
        try:
            parts.append(inspect.getsource(fn) if fn is not None else "")
        except (OSError, TypeError):  # no source (frozen install): the version constants still count
            parts.append(name)
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def _hash_file(path: Path) -> tuple[str | None, str]:
    """sha256 of the file's bytes, or (None, reason) as load_pool words it."""
    try:
        h, size = hashlib.sha256(), 0
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
                size += len(block)
        if size == 0:
            return None, "empty file (0 bytes)"
        return h.hexdigest(), ""
    except OSError as e:
        return None, f"{type(e).__name__}: {e}".strip()


def _npy_header(shape: tuple[int, ...]) -> bytes:
    """A .npy v1.0 header of exactly HEADER_BYTES for uint8 C-order data of ``shape``."""
    d = "{'descr': '|u1', 'fortran_order': False, 'shape': %r, }" % (tuple(int(s) for s in shape),)
    body = d.ljust(HEADER_BYTES - 10 - 1) + "\n"
    if len(body) != HEADER_BYTES - 10:
        raise ValueError(f"shape {shape} does not fit a {HEADER_BYTES}-byte .npy header")
    return b"\x93NUMPY\x01\x00" + len(body).to_bytes(2, "little") + body.encode("latin1")


def _atomic_json(path: Path, obj) -> None:
    atomic_write_bytes(path, json.dumps(obj, ensure_ascii=False).encode("utf-8", "surrogateescape"))


def _read_json(path: Path):
    return json.loads(path.read_text(encoding="utf-8", errors="surrogateescape"))


def load_pool_cached(root: str | os.PathLike, size: int = 128, *, cache_dir: str | os.PathLike,
                     workers: int | None = None, progress: bool = True) -> Pool:
    """:func:`~coldseg.data.pool.load_pool` with the decoded pixels cached in ``cache_dir``.

    Returns the same pool (ids, digests, skipped, duplicates, ...); ``images`` is a read-only memmap.
    Raises :class:`PoolError` when the folder is missing or holds no readable image.
    """
    root, listing, skipped = list_pool_files(root, size, stacklevel=4)
    rels = listing.images
    workers = workers or min(8, (os.cpu_count() or 1) + 2)
    with ThreadPoolExecutor(workers) as ex:
        hashed = list(tqdm(ex.map(_hash_file, [root / r for r in rels]), total=len(rels), unit="img",
                           desc="hashing images", disable=not progress, leave=False))
    h = hashlib.sha256(f"{size}\0{_decoder_fingerprint()}\n".encode())
    for rel, (digest, reason) in zip(rels, hashed):
        h.update(rel.encode("utf-8", "surrogateescape") + b"\0" + (digest or reason).encode() + b"\n")
    folder = Path(cache_dir) / "decoded" / h.hexdigest()[:24]
    meta = _load_meta(folder, size)
    if meta is None:
        folder.mkdir(parents=True, exist_ok=True)
        with folder_lock(folder, wait=True):   # two processes never decode into the same file
            meta = _load_meta(folder, size)  # another process may have finished it meanwhile
            if meta is None:
                meta = _build(folder, root, rels, hashed, size, workers, progress)
    report_read(root, len(rels), len(meta["ids"]), meta["skipped"], meta["duplicates"], meta["multi_frame"])
    images = np.load(folder / "images.npy", mmap_mode="r")
    return Pool(root=root, ids=meta["ids"], images=images, digests=meta["digests"], grayscale=meta["grayscale"],
                skipped=skipped + meta["skipped"], duplicates=meta["duplicates"], ignored=listing.other,
                hidden=listing.hidden, unfollowed=listing.unfollowed, multi_frame=meta["multi_frame"],
                outputs=listing.outputs)


def _load_meta(folder: Path, size: int) -> dict | None:
    try:
        meta = _read_json(folder / "pool.json")
        with open(folder / "images.npy", "rb") as f:
            np.lib.format.read_magic(f)
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
    except (OSError, ValueError, KeyError):
        return None
    if shape != (len(meta["ids"]), 3, size, size) or dtype != np.uint8:
        return None
    return meta


def _build(folder: Path, root: Path, rels: list[str], hashed: list[tuple[str | None, str]], size: int,
           workers: int, progress: bool) -> dict:
    """Decode the distinct readable files of ``rels`` into ``folder`` (resuming a partial decode)."""
    skipped: dict[int, dict] = {}
    dups: list[tuple[int, str]] = []          # (position in rels, digest of the kept file)
    first: dict[str, int] = {}                # digest -> position of its first file
    for i, (rel, (digest, reason)) in enumerate(zip(rels, hashed)):
        if digest is None:
            skipped[i] = {"id": rel, "reason": reason}
        elif digest in first:
            dups.append((i, digest))
        else:
            first[digest] = i
    cand = sorted(first.values())             # positions of the files to decode, in id order
    part, prog = folder / "images.npy.partial", folder / "progress.json"
    state = {"n": len(cand), "done": 0, "rows": 0, "gray": True, "failed": {}, "multi": []}
    if part.exists() and prog.exists():
        with contextlib.suppress(OSError, ValueError):
            old = _read_json(prog)
            if old.get("n") == len(cand) and part.stat().st_size >= HEADER_BYTES + old["rows"] * 3 * size * size:
                state = old
    row_bytes = 3 * size * size
    if state["done"] == 0:
        with open(part, "wb") as f:
            f.write(_npy_header((len(cand), 3, size, size)))
    todo = cand[state["done"]:]
    bar = tqdm(total=len(cand), initial=state["done"], desc="decoding images", unit="img",
               disable=not progress, leave=False)
    # as load_pool: decode() refuses oversized images with a clear reason, so Pillow's warning is silenced
    with open(part, "r+b") as f, warnings.catch_warnings(), ThreadPoolExecutor(workers) as ex:
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        f.seek(HEADER_BYTES + state["rows"] * row_bytes)
        f.truncate()
        for s in range(0, len(todo), CHUNK):
            chunk = todo[s : s + CHUNK]
            for pos, (rel, digest, arr, gray, reason, frames) in zip(
                    chunk, ex.map(read_one, [(root, rels[p], size) for p in chunk])):
                if arr is None:
                    state["failed"][str(pos)] = reason
                    continue
                if digest != hashed[pos][0]:
                    raise PoolError(f"{rel} changed while the pool was being read; rerun")
                f.write(np.ascontiguousarray(arr, dtype=np.uint8).tobytes())
                state["rows"] += 1
                state["gray"] = state["gray"] and bool(gray)
                if frames > 1:
                    state["multi"].append({"id": rel, "frames": int(frames)})
            f.flush()
            os.fsync(f.fileno())
            state["done"] += len(chunk)
            _atomic_json(prog, state)
            bar.update(len(chunk))
        bar.close()
        f.seek(0)
        f.write(_npy_header((state["rows"], 3, size, size)))  # drop the rows of unreadable files
        f.flush()
        os.fsync(f.fileno())
    failed = {int(p): r for p, r in state["failed"].items()}
    for p, r in failed.items():
        skipped[p] = {"id": rels[p], "reason": r}
    duplicates = []
    for i, digest in dups:  # a copy of an unreadable file is unreadable too: skipped with its own reason
        if first[digest] in failed:
            skipped[i] = {"id": rels[i], "reason": read_one((root, rels[i], size))[4] or failed[first[digest]]}
        else:
            duplicates.append({"id": rels[i], "same_as": rels[first[digest]]})
    kept = [p for p in cand if p not in failed]
    meta = {"ids": [rels[p] for p in kept], "digests": [hashed[p][0] for p in kept],
            "grayscale": bool(state["gray"]) and bool(kept), "skipped": [skipped[i] for i in sorted(skipped)],
            "duplicates": duplicates, "multi_frame": state["multi"]}
    os.replace(part, folder / "images.npy")
    _atomic_json(folder / "pool.json", meta)
    prog.unlink(missing_ok=True)
    return meta
