"""Same seed, same machine, same threads: the same bytes, across fresh processes.

MoCo training is only bit-reproducible where the float arithmetic is the same (thread count, CPU
kernel level; benchmarks/numerics_drift.py measures how far it drifts otherwise), so the manifest
names both, and a pick list is reproduced anywhere from the saved features.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np

from _faults import coldseg_cmd


def _run(cmd: list[str], **env: str) -> None:
    full = {**os.environ, "OMP_NUM_THREADS": "1", **env}
    full.pop("COLDSEG_DEBUG", None)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=full)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _embed(pool: Path, out: Path, cache: Path, *, threads: int = 1, hashseed: str = "0") -> None:
    _run(coldseg_cmd("embed", pool, "--out", out, "--image-size", 32, "--epochs", 1, "--min-steps", 6,
                     "--batch-size", 8, "--candidates", "none", "--cache-dir", cache, "--quiet",
                     threads=threads), PYTHONHASHSEED=hashseed)


def test_two_fresh_processes_give_byte_identical_features(pool_dir, tmp_path):
    # different hash seeds: nothing may depend on set or dict-of-str iteration order
    _embed(pool_dir, tmp_path / "a", tmp_path / "cache_a", hashseed="1")
    _embed(pool_dir, tmp_path / "b", tmp_path / "cache_b", hashseed="2")
    a, b = (tmp_path / "a" / "features.npy").read_bytes(), (tmp_path / "b" / "features.npy").read_bytes()
    assert a == b
    assert (tmp_path / "a" / "feature_ids.txt").read_text() == (tmp_path / "b" / "feature_ids.txt").read_text()
    # the training really ran in each process (separate caches), it was not one cached result read twice
    for d in ("a", "b"):
        man = json.loads((tmp_path / d / "manifest.json").read_text())
        assert man["features"]["training"]["final_loss"] > 0


def test_manifest_names_the_arithmetic_that_decides_bit_reproducibility(pool_dir, tmp_path):
    import torch

    _embed(pool_dir, tmp_path / "a", tmp_path / "cache", threads=1)
    device = json.loads((tmp_path / "a" / "manifest.json").read_text())["device"]
    m = re.fullmatch(r"cpu \((.+), (\w+) kernels, (\d+) threads\)", device)
    assert m, device
    assert m.group(1).strip() and m.group(2) == torch.backends.cpu.get_cpu_capability()
    assert m.group(3) == "1"


def test_picks_from_saved_features_do_not_depend_on_threads(pool_dir, tmp_path):
    rng = np.random.default_rng(0)
    ids = sorted(p.relative_to(pool_dir).as_posix() for p in pool_dir.rglob("*") if p.is_file())
    feats = rng.normal(size=(len(ids), 16)).astype(np.float32)
    np.savez(tmp_path / "f.npz", features=feats, ids=np.array(ids))
    picks = {}
    for threads in (1, 2):
        out = tmp_path / f"sel{threads}"
        _run(coldseg_cmd("select", pool_dir, "--features", tmp_path / "f.npz", "--budget", 6, "--out", out,
                         "--no-report", "--quiet", threads=threads), OMP_NUM_THREADS=str(threads))
        picks[threads] = (out / "selected.txt").read_text()
    assert len(picks[1].split()) == 6 and picks[1] == picks[2]


def test_cuda_runs_use_deterministic_cudnn_and_restore_the_settings():
    import torch

    from coldseg.features.train import reproducible_kernels

    cudnn = torch.backends.cudnn
    before = cudnn.deterministic, cudnn.benchmark
    try:
        cudnn.deterministic, cudnn.benchmark = False, True          # what a caller may have set
        with reproducible_kernels(torch.device("cpu")):
            assert (cudnn.deterministic, cudnn.benchmark) == (False, True)   # the CPU needs nothing
        with reproducible_kernels(torch.device("cuda", 0)):           # only flags: no GPU needed
            assert (cudnn.deterministic, cudnn.benchmark) == (True, False)
        assert (cudnn.deterministic, cudnn.benchmark) == (False, True)
        try:
            with reproducible_kernels(torch.device("cuda")):
                raise KeyboardInterrupt
        except KeyboardInterrupt:
            pass
        assert (cudnn.deterministic, cudnn.benchmark) == (False, True)       # restored on an exception too
    finally:
        cudnn.deterministic, cudnn.benchmark = before


def test_training_and_embedding_run_under_the_reproducible_kernels(monkeypatch, tiny_moco):
    import contextlib

    import torch

    import coldseg.features.embed as embed_mod
    import coldseg.features.train as train_mod

    seen = []

    @contextlib.contextmanager
    def record(dev):
        seen.append(dev.type)
        yield

    monkeypatch.setattr(train_mod, "reproducible_kernels", record)
    monkeypatch.setattr(embed_mod, "reproducible_kernels", record)
    imgs = np.random.default_rng(0).integers(0, 256, (8, 3, 32, 32), dtype=np.uint8)
    cfg = dataclasses.replace(tiny_moco, image_size=32, epochs=1, min_steps=1, batch_size=4, candidates="none")
    model, _ = train_mod.train_moco(imgs, cfg, seed=0, progress=False)
    feats = embed_mod.embed_images(model, torch.from_numpy(imgs), device="cpu")
    assert seen == ["cpu", "cpu"] and feats.shape[0] == 8
