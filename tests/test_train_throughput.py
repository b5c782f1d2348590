"""benchmarks/train_throughput.py times the step training runs, and its ratios add up.

The benchmark's MoCo step is built from ``two_views`` and ``contrast``, the functions train_moco
steps through; the first test fails if training stops using them (the benchmark would then time
something else). Timings themselves are not asserted: they live in docs/performance.md.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

import coldseg.features.train as train

ROOT = Path(__file__).resolve().parents[1]


def test_training_steps_through_the_benchmarked_functions(monkeypatch):
    calls = {"two_views": 0, "contrast": 0}

    def counted(name):
        real = getattr(train, name)

        def wrapper(*a, **k):
            calls[name] += 1
            return real(*a, **k)
        return wrapper

    for name in calls:
        monkeypatch.setattr(train, name, counted(name))
    imgs = np.random.default_rng(0).integers(0, 256, (16, 3, 32, 32), dtype=np.uint8)
    cfg = train.MocoConfig(epochs=2, batch_size=8, min_steps=0, candidates="none", width=8, queue=8)
    _, log = train.train_moco(imgs, cfg, seed=0, device="cpu", progress=False)
    assert len(log["loss"]) == 2
    assert calls == {"two_views": 4, "contrast": 4}   # 2 epochs × 2 steps of 8


def test_benchmark_prints_consistent_ratios():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "train_throughput.py"), "--image-size", "32",
                           "--batch-size", "8", "--steps", "1", "--warmup", "1", "--rounds", "2", "--width", "8", "--device", "cpu"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    rates = ["moco_images_per_s", "moco_ready_images_per_s", "augment_images_per_s", "bare_encoder_images_per_s",
             "bare_forward_images_per_s"]
    assert all(r[k] > 0 for k in rates)
    for k in rates:   # the median of the rounds lies in their range
        lo, hi = r[k.replace("_images_per_s", "_range")]
        assert lo <= r[k] <= hi
    assert abs(r["ratio"] - r["moco_images_per_s"] / r["bare_encoder_images_per_s"]) < 2e-3
    assert abs(r["ratio_per_view"] - 2 * r["ratio"]) < 2e-3
    assert abs(r["ratio_ready"] - r["moco_ready_images_per_s"] / r["bare_encoder_images_per_s"]) < 2e-3
    assert abs(r["augment_share"] - r["moco_images_per_s"] / r["augment_images_per_s"]) < 2e-3
    assert abs(r["key_forward_share"] - r["moco_images_per_s"] / r["bare_forward_images_per_s"]) < 2e-3
