"""Label-free comparison of MoCo schedules: the feature check (view_top1, knn_overlap) per setting.

Trains MoCo on every image of a folder once per ``--settings`` entry and prints one JSON line each:
the settings, SGD steps, seconds, final loss, the chance loss ln(K+1) and the feature check of
:mod:`coldseg.features.quality` (with the same network untrained as reference). No label is read, so a schedule may be chosen on any pool.

    python benchmarks/feature_schedule.py ../shared/data/kvasir_seg/images --image-size 64 \\
        --settings 'batch_size=128,epochs=50;batch_size=32,epochs=50' --seed 0

Each entry is comma-separated MocoConfig fields; results are not cached (every run trains).
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import tempfile
import time
from dataclasses import fields

import torch

from coldseg.data.pool import load_pool
from coldseg.features.embed import compute_features
from coldseg.features.train import MocoConfig, moco_steps, queue_size


def _parse(entry: str, image_size: int) -> MocoConfig:
    types = {f.name: f.type for f in fields(MocoConfig)}
    kw: dict = {"image_size": image_size}
    for part in filter(None, (p.strip() for p in entry.split(","))):
        k, _, v = part.partition("=")
        if k not in types or k == "augment":
            raise SystemExit(f"unknown MocoConfig field {k!r}")
        kw[k] = {"int": int, "float": float, "str": str}[str(types[k])](v)
    return MocoConfig(**kw)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("images_dir")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--settings", required=True, help="';'-separated entries of comma-separated field=value")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default=None)
    a = ap.parse_args()
    pool = load_pool(a.images_dir, a.image_size, progress=False)
    for entry in filter(None, a.settings.split(";")):
        cfg = _parse(entry, a.image_size)
        n = len(pool.images)
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            _, info = compute_features(pool.images, seed=a.seed, settings=cfg, device=a.device, cache_dir=tmp,
                                       progress=False)
            dt = time.perf_counter() - t
        log = info["log"]
        print(json.dumps({"settings": entry, "n": n, "steps": moco_steps(cfg, n), "seconds": round(dt, 1),
                          "final_loss": round(log["loss"][-1], 4), "chance_loss": round(math.log(queue_size(cfg, n) + 1), 4),
                          "augmentation": (log.get("augmentation") or {}).get("winner"),
                          "feature_check": info.get("feature_check"), "seed": a.seed,
                          "machine": platform.processor() or platform.machine(),
                          "torch_threads": torch.get_num_threads()}), flush=True)


if __name__ == "__main__":
    main()
