"""Does the same seed give the same picks? Features and picks under changed CPU arithmetic.

MoCo training is seeded throughout, so two runs on one machine with the same settings give
bit-identical features. Float sums are not associative, though: a different thread count, or kernels
for another instruction set (AVX2 against AVX512, which is what another CPU model gives), round in a
different order, and hundreds of SGD steps magnify a last-bit difference into another encoder. This
script measures that on one pool. Each configuration trains the encoder in a fresh process
(``coldseg embed``) with the same seed and settings and then picks with ``--strategy`` from its own
features; every configuration also picks from the *reference* run's saved ``features.npy``
(``coldseg select --features``), which is how a team reproduces a pick list on another machine.

One JSON line per configuration:
``{"config", "steps", "env", "device", "seconds", "features_identical", "max_abs_diff", "mean_cosine",
"pick_overlap": {strategy: share}, "picks_from_saved_features_identical": {strategy: bool}}`` where the
differences and the overlap (share of the reference's picks also picked here, per ``--strategy``) are
against the first configuration, ``reference``. A random draw of the same budget would share about
the budget's fraction.

    python benchmarks/numerics_drift.py examples/dubai_sample/images --image-size 32 --min-steps 40

Configurations (x86 only for the kernel caps): ``reference`` and ``repeat`` (the environment as it
is, ``OMP_NUM_THREADS`` = ``--threads``); ``seed+1`` (as the reference, but the encoder trained with the
next seed: how far another seed moves things, for scale; the picks still use ``--seed``); ``threads-1``;
``aten-avx2`` (``ATEN_CPU_CAPABILITY=avx2``); ``onednn-avx2`` (``ONEDNN_MAX_CPU_ISA=AVX2``);
``openblas-haswell`` (``OPENBLAS_CORETYPE=Haswell``: numpy's BLAS, which the selectors use). On a GPU
(``--device cuda --configs repeat``) the two runs show whether training there is bit-reproducible
(coldseg trains under ``coldseg.features.train.reproducible_kernels``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from coldseg.features.train import MocoConfig, moco_steps


def _configs(threads: int) -> list[tuple[str, dict[str, str]]]:
    base = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    out = [("reference", base), ("repeat", base), ("seed+1", base),
           ("threads-1", {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})]
    if platform.machine().lower() in ("x86_64", "amd64"):
        out += [("aten-avx2", {**base, "ATEN_CPU_CAPABILITY": "avx2"}),
                ("onednn-avx2", {**base, "ONEDNN_MAX_CPU_ISA": "AVX2"}),
                ("openblas-haswell", {**base, "OPENBLAS_CORETYPE": "Haswell"})]
    return out


def _coldseg(args: list[str], env: dict[str, str]) -> None:
    full_env = {**os.environ, **env, "PYTHONHASHSEED": str(abs(hash(tuple(args))) % 10_000)}
    proc = subprocess.run([sys.executable, "-m", "coldseg", *args], env=full_env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"coldseg {' '.join(args[:1])} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")


def _picks(out: Path) -> list[str]:
    return (out / "selected.txt").read_text().split()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("images_dir", nargs="?", default="examples/dubai_sample/images")
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--min-steps", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--budget", default="10%")
    ap.add_argument("--strategy", default="kmedian",
                    help="comma list of selectors, each reported in pick_overlap and "
                         "picks_from_saved_features_identical")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto: on a GPU run --configs repeat, which "
                    "checks that the same seed trains the same encoder there (the CPU configurations change "
                    "nothing on a GPU)")
    ap.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of the reference run")
    ap.add_argument("--configs", default=None, help="comma list of configuration names to run (default all)")
    ap.add_argument("--max-images", type=int, default=None,
                    help="use only the first N images (sorted by name): fewer steps per epoch, so a short "
                         "--min-steps shows how the drift grows with training")
    args = ap.parse_args()

    configs = _configs(args.threads)
    if args.configs:
        wanted = args.configs.split(",")
        unknown = sorted(set(wanted) - {c[0] for c in configs})
        if unknown:
            raise SystemExit(f"numerics_drift: unknown configuration(s) {', '.join(unknown)}; "
                             f"choose from {', '.join(c[0] for c in configs)}")
        configs = [c for c in configs if c[0] in wanted or c[0] == "reference"]
    cfg = MocoConfig(epochs=args.epochs, min_steps=args.min_steps, batch_size=args.batch_size)
    with tempfile.TemporaryDirectory(prefix="coldseg-drift-") as tmp:
        root = Path(tmp)
        images_dir = args.images_dir
        if args.max_images:
            images_dir = root / "images"
            images_dir.mkdir()
            files = sorted(p for p in Path(args.images_dir).rglob("*") if p.is_file() and not p.name.startswith("."))
            for f in files[:args.max_images]:
                shutil.copy2(f, images_dir / f.name)
            images_dir = str(images_dir)
        ref_feats = ref_picks = ref_saved_picks = None
        for name, env in configs:
            emb = root / f"embed-{name}"
            t0 = time.perf_counter()
            seed = args.seed + (name == "seed+1")   # the one configuration that changes the seed, for scale
            _coldseg(["embed", images_dir, "--out", str(emb), "--seed", str(seed),
                      "--image-size", str(args.image_size), "--epochs", str(args.epochs),
                      "--min-steps", str(args.min_steps), "--batch-size", str(args.batch_size),
                      "--candidates", "none", "--device", args.device,
                      "--cache-dir", str(root / f"cache-{name}"), "--quiet"], env)
            seconds = time.perf_counter() - t0
            feats = np.load(emb / "features.npy")
            strategies = args.strategy.split(",")
            sel_args = ["--budget", args.budget, "--seed", str(args.seed), "--no-report", "--quiet"]
            picks = {}
            for strat in strategies:
                _coldseg(["select", images_dir, "--features", str(emb / "features.npy"), "--strategy", strat,
                          "--out", str(root / f"own-{name}-{strat}"), *sel_args], env)
                picks[strat] = _picks(root / f"own-{name}-{strat}")
            ref_path = (emb if ref_feats is None else root / "embed-reference") / "features.npy"
            saved_picks = {}
            for strat in strategies:
                _coldseg(["select", images_dir, "--features", str(ref_path), "--strategy", strat,
                          "--out", str(root / f"saved-{name}-{strat}"), *sel_args], env)
                saved_picks[strat] = _picks(root / f"saved-{name}-{strat}")
            if ref_feats is None:
                ref_feats, ref_picks, ref_saved_picks = feats, picks, saved_picks
            a = ref_feats / np.maximum(np.linalg.norm(ref_feats, axis=1, keepdims=True), 1e-12)
            b = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
            manifest = json.loads((emb / "manifest.json").read_text())
            print(json.dumps({
                "config": name, "steps": moco_steps(cfg, len(feats)), "env": env, "device": manifest["device"],
                "seconds": round(seconds, 1),
                "features_identical": bool(np.array_equal(feats, ref_feats)),
                "max_abs_diff": float(np.abs(feats - ref_feats).max()),
                "mean_cosine": round(float((a * b).sum(1).mean()), 4),
                "pick_overlap": {k: round(len(set(v) & set(ref_picks[k])) / len(ref_picks[k]), 3)
                                 for k, v in picks.items()},
                "picks_from_saved_features_identical": {k: v == ref_saved_picks[k] for k, v in saved_picks.items()},
            }), flush=True)


if __name__ == "__main__":
    main()
