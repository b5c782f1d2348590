"""Peak memory of reading and embedding a pool: in memory (load_pool) against the decoded memmap cache.

    python benchmarks/stream_memory.py --n 5000 --size 128

Writes N generated JPEGs (160 × 160, not timed, kept in --pool for reruns), then measures each mode in
a fresh process and prints one JSON line per mode:

- ``memory``: ``load_pool`` (every image decoded into one (n, 3, S, S) array) + ``embed_images``;
- ``decoded``: ``load_pool_cached`` into an empty cache (decode once into images.npy) + streamed embedding;
- ``decoded-hit``: the same with the cache already built (hash pass only) + streamed embedding.

Fields: seconds of the read and embed phases; ``rss_read_mb`` (VmRSS after reading), ``peak_read_mb``
(VmHWM after reading) and ``peak_mb`` (VmHWM at the end), all including the interpreter, torch
and the model (``base_mb``: VmRSS after imports and model construction).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODES = ("memory", "decoded", "decoded-hit")


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def make_pool(root: Path, n: int, seed: int = 0) -> None:
    import numpy as np
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    if len(list(root.glob("*.jpg"))) == n:
        return
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:160, 0:160]
    for i in range(n):
        base = rng.integers(0, 256, 3)
        img = np.empty((160, 160, 3), np.float64)
        img[:] = base
        cy, cx, r = rng.uniform(40, 120), rng.uniform(40, 120), rng.uniform(10, 50)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.integers(0, 256, 3)
        img += rng.normal(0, 12, img.shape)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / f"img_{i:06d}.jpg", quality=90)


def measure(mode: str, pool: Path, cache: Path, size: int, width: int) -> dict:
    import torch

    from coldseg.data.decoded import load_pool_cached
    from coldseg.data.pool import load_pool
    from coldseg.features.embed import embed_images
    from coldseg.features.train import MocoConfig, build_model

    torch.manual_seed(0)
    model = build_model(MocoConfig(image_size=size, width=width), 10_000, torch.Generator().manual_seed(0))
    base = _status_mb("VmRSS")
    t = time.perf_counter()
    if mode == "memory":
        p = load_pool(pool, size, progress=False)
    else:
        p = load_pool_cached(pool, size, cache_dir=cache, progress=False)
    t_read = time.perf_counter() - t
    rss_read, peak_read = _status_mb("VmRSS"), _status_mb("VmHWM")
    t = time.perf_counter()
    X = embed_images(model, p.images)
    t_embed = time.perf_counter() - t
    return {"mode": mode, "n": len(p), "size": size, "width": width, "pool_mb": round(p.images.nbytes / 2**20, 1),
            "images_type": type(p.images).__name__, "read_s": round(t_read, 2), "embed_s": round(t_embed, 2),
            "base_mb": round(base), "rss_read_mb": round(rss_read), "peak_read_mb": round(peak_read),
            "peak_mb": round(_status_mb("VmHWM")), "features": list(X.shape),
            "torch_threads": torch.get_num_threads()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--width", type=int, default=64, help="ResNet-18 width of the (untrained) encoder")
    ap.add_argument("--pool", type=Path, default=Path(tempfile.gettempdir()) / "coldseg_stream_pool")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)       # internal: measure one mode here
    ap.add_argument("--cache", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.pool, args.cache, args.size, args.width)), flush=True)
        return
    pool = args.pool / str(args.n)
    make_pool(pool, args.n)
    with tempfile.TemporaryDirectory(dir=args.pool) as cache:
        for mode in args.modes.split(","):
            if mode not in MODES:
                raise SystemExit(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
            subprocess.run([sys.executable, __file__, "--one", mode, "--pool", str(pool), "--cache", cache,
                            "--size", str(args.size), "--width", str(args.width)], check=True)


if __name__ == "__main__":
    main()
