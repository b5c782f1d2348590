"""U-Net trainings per minute through the benchmark's job runner, on random data.

Runs N trainings (default 16) of a fixed step count on synthetic 128-px image/mask pairs through
``coldseg.segment.runner.run_jobs`` with the given number of workers or stacked models, and prints
one JSON line: trainings per minute, seconds per training (mean of the jobs' own timings; stacked:
chunk time / chunk size), seconds of scoring per job, device and settings. On a GPU compare
``--workers 1`` (one at a time), ``--workers 8`` (processes sharing the card), ``--stack 8`` and
``--stack 16`` (models stepped together in one process; the GPU default is ``--stack 8``).

    python benchmarks/bench_throughput.py --jobs 16 --steps 1500 --stack 8 [--device cuda]
    python benchmarks/bench_throughput.py --jobs 2 --steps 5 --image-size 32 --device cpu   # smoke
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from coldseg.data.pairs import PairSet
from coldseg.segment.runner import SegJob, resolve_parallelism, run_jobs
from coldseg.segment.train import SegConfig, resolve_device


def random_pairs(n: int, size: int, seed: int = 0) -> PairSet:
    """n random RGB images, each with one filled disc as its mask (the disc is brighter)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images = rng.integers(0, 100, (n, 3, size, size), dtype=np.uint8)
    masks = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        cy, cx = rng.integers(size // 4, 3 * size // 4, 2)
        r = rng.integers(size // 10, size // 4)
        m = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        masks[i] = m
        images[i][:, m] += 120
    ids = [f"r{i:05d}" for i in range(n)]
    return PairSet(Path("."), ids, images, masks, ids, 2)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=16, help="trainings to run (default 16)")
    ap.add_argument("--steps", type=int, default=1500, help="optimisation steps per training (default 1500)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--pool", type=int, default=1000, help="synthetic pairs (default 1000; 20%% are the test set)")
    ap.add_argument("--train-size", type=int, default=172, help="labelled images per training (default 172)")
    ap.add_argument("--workers", type=int, default=None, help="worker processes (runner default when omitted)")
    ap.add_argument("--stack", type=int, default=None, help="models trained together in one process "
                    "(runner default when omitted: 8 on a GPU)")
    ap.add_argument("--device", default=None, help="cpu or cuda[:i] (default: CUDA when present)")
    args = ap.parse_args(argv)

    pairs = random_pairs(args.pool, args.image_size)
    n_test = max(1, args.pool // 5)
    test_idx = np.arange(args.pool - n_test, args.pool)
    n_train = min(args.train_size, args.pool - n_test)
    cfg = SegConfig(steps=args.steps, batch_size=args.batch_size)
    rng = np.random.default_rng(0)
    jobs = [SegJob(f"job{j}", rng.choice(args.pool - n_test, n_train, replace=False), seed=j)
            for j in range(args.jobs)]
    dev = resolve_device(args.device)
    workers, stack = resolve_parallelism(dev, args.workers, args.stack)
    t0 = time.perf_counter()
    results = [res for _, res in run_jobs(jobs, pairs, test_idx, cfg, device=dev, workers=args.workers,
                                          stack=args.stack, progress=False)]
    wall = time.perf_counter() - t0
    out = {
        "trainings_per_minute": round(60.0 * len(results) / wall, 2),
        "wall_seconds": round(wall, 2),
        "mean_train_seconds": round(float(np.mean([r["train_seconds"] for r in results])), 3),
        "mean_eval_seconds": round(float(np.mean([r["eval_seconds"] for r in results])), 3),
        "device": results[0]["device"] if results else str(dev),
        "workers": workers, "stack": stack, "jobs": args.jobs, "steps": args.steps, "batch_size": args.batch_size,
        "image_size": args.image_size, "train_size": n_train, "test_size": n_test,
        "channels": list(cfg.channels), "torch": torch.__version__, "cpus": os.cpu_count(),
        "host": platform.node(),
    }
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
