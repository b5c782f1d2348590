"""How noisy is one benchmark cell? Dice spread from the U-Net's own seed against the spread from the pick.

A benchmark cell (strategy, ratio, seed) is one U-Net trained on one selection and scored once. Two
things move its Dice: *which* images were picked (what a selector controls) and the U-Net's seed
(weight init, batch order, augmentation: what it does not). This script measures both on one dataset
and ratio, and prints one JSON line per measurement:

- ``init``: one fixed selection (``--strategy`` on seed 0's features, or a random draw with seed 0),
  trained with ``--repeats`` U-Net seeds: the spread that is pure training noise;
- ``draw``: ``--draws`` random selections (seeds 0..D-1), all trained with U-Net seed 0: the spread of
  what random picks give, training noise included;
- ``full``: the whole pool with ``--repeats`` U-Net seeds.

The last line, ``summary``, gives the standard deviations and the number of seeds a paired comparison
would need to resolve a difference of ``--resolve`` Dice points at 95 % (normal approximation,
assuming the paired differences vary like two independent cells).

    python benchmarks/eval_noise.py ../shared/data/kvasir_seg --image-size 64 --steps 200 \\
        --ratio 10 --repeats 5 --draws 5 --evaluate-on validation \\
        --features docs/results/kvasir_seg_cpu64_validation_b32/features/moco-seed0.npy --strategy ca-typical

Scores are on the validation part of the pool with ``--evaluate-on validation`` (the test set is never
read), using the benchmark's own split and training code.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import numpy as np
import torch

from coldseg.bench.sweep import BenchmarkConfig, evaluation_split
from coldseg.data.splits import subset_size
from coldseg.data.pairs import load_pairs
from coldseg.segment.runner import SegJob, run_jobs
from coldseg.segment.train import SegConfig


def _sd(x: list[float]) -> float:
    return float(np.std(x, ddof=1)) if len(x) > 1 else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data_dir")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--channels", default="16,32,64,128,256")
    ap.add_argument("--ratio", type=float, default=10.0, help="percent of the pool labelled")
    ap.add_argument("--repeats", type=int, default=5, help="U-Net seeds per fixed selection")
    ap.add_argument("--draws", type=int, default=5, help="random selections")
    ap.add_argument("--strategy", default="random", help="the fixed selection of the 'init' line")
    ap.add_argument("--features", default=None, help=".npy of pool features (rows = pool order) for --strategy")
    ap.add_argument("--evaluate-on", default="validation", choices=["validation", "test"])
    ap.add_argument("--resolve", type=float, default=1.0, help="difference to resolve, in Dice points")
    ap.add_argument("--device", default=None)
    a = ap.parse_args()

    cfg = BenchmarkConfig(a.data_dir, "-", ["random"], [a.ratio], [0], image_size=a.image_size,
                          evaluate_on=a.evaluate_on)
    seg = SegConfig(steps=a.steps, channels=tuple(int(c) for c in a.channels.split(",")))
    pairs = load_pairs(a.data_dir, a.image_size, progress=False)
    pool_idx, eval_idx = evaluation_split(cfg, pairs.ids, pairs.groups)
    n = subset_size(a.ratio, len(pool_idx))
    machine = {"machine": platform.processor() or platform.machine(), "torch": torch.__version__,
               "threads": torch.get_num_threads()}

    from coldseg.select.registry import get_selector
    if a.strategy == "random" or a.features is None:
        fixed = np.random.default_rng(0).choice(len(pool_idx), n, replace=False)
        fixed_name = "random(seed 0)"
    else:
        X = np.load(a.features)
        if len(X) != len(pool_idx):
            raise SystemExit(f"--features has {len(X)} rows, the pool {len(pool_idx)}")
        fixed = get_selector(a.strategy).select(X, n, random_state=0).indices
        fixed_name = a.strategy
    random_sel = get_selector("random")
    zeros = np.zeros((len(pool_idx), 1), dtype=np.float32)
    draws = [random_sel.select(zeros, n, random_state=s).indices for s in range(a.draws)]

    jobs = ([SegJob(f"init/{r}", pool_idx[fixed], r) for r in range(a.repeats)]
            + [SegJob(f"draw/{s}", pool_idx[d], 0) for s, d in enumerate(draws)]
            + [SegJob(f"full/{r}", pool_idx, r) for r in range(a.repeats)])
    dice: dict[str, list[float]] = {"init": [], "draw": [], "full": []}
    for job, res in run_jobs(jobs, pairs, eval_idx, seg, device=a.device, progress=False):
        kind, _, i = job.key.partition("/")
        dice[kind].append(100 * res["dice_mean"])
        print(json.dumps({"kind": kind, "index": int(i), "n_labeled": len(job.train_idx),
                          "dice_points": round(100 * res["dice_mean"], 2),
                          "train_seconds": round(res["train_seconds"], 1)}), flush=True)
    sd_init, sd_draw = _sd(dice["init"]), _sd(dice["draw"])
    # paired difference of two cells ~ sd * sqrt(2); seeds n for a 95 % half-width < resolve
    need = {k: math.ceil((1.96 * math.sqrt(2) * sd / a.resolve) ** 2) if sd == sd else None
            for k, sd in (("init_only", sd_init), ("draw", sd_draw))}
    print(json.dumps({"kind": "summary", "dataset": Path(a.data_dir).resolve().name, "evaluate_on": a.evaluate_on,
                      "image_size": a.image_size, "steps": a.steps, "ratio": a.ratio, "n_labeled": n,
                      "n_pool": len(pool_idx), "n_eval": len(eval_idx), "fixed": fixed_name,
                      "init_mean": round(float(np.mean(dice["init"])), 2), "init_sd": round(sd_init, 2),
                      "draw_mean": round(float(np.mean(dice["draw"])), 2), "draw_sd": round(sd_draw, 2),
                      "full_mean": round(float(np.mean(dice["full"])), 2), "full_sd": round(_sd(dice["full"]), 2),
                      "seeds_to_resolve": need, "resolve_points": a.resolve, **machine,
                      "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}), flush=True)


if __name__ == "__main__":
    main()
