"""Time and peak memory of every selector on large synthetic pools (issue 5, "Selection at scale").

Each (selector, n) pair runs in a fresh Python process (this script in ``--child`` mode), so one
selector's allocations never inflate another's peak. The child loads the cached features, times
``get_selector(name).select(X, budget, random_state=seed)`` (with a uniform random per-image
side array for a strategy that reads one, as hard-contrast reads MoCo's confidence) and prints one JSON line:

    {"selector": "ca", "n": 1000000, "d": 128, "budget": 10000, "seconds": 61.2, "peak_rss_mb": 1480.3,
     "loaded_rss_mb": 770.1}

``peak_rss_mb`` is the child's VmHWM (the whole process: interpreter, numpy/scikit-learn/torch
imports, the features and the selector's work); ``loaded_rss_mb`` is its RSS after the imports and
the features were loaded, before the selector ran. ``seconds`` covers the ``select`` call only.
A failed or timed-out child prints the same keys with ``seconds`` null and an ``error``.

Features: ``--blobs`` (50) isotropic Gaussian blobs in d dimensions (sigma 1, centres drawn from
N(0, 3^2 I), blob weights uniform in [0.5, 1.5]), float32, generated in chunks straight into a .npy
file under ``--cache`` so generation is never timed and never held twice in memory.

    python benchmarks/selection_scale.py                          # n = 10^4, 10^5, 10^6, every selector
    python benchmarks/selection_scale.py --n 1000000 --selectors ca,kcenter --timeout 1800

``--silhouette-error`` instead measures the stratified silhouette estimate (the one ``ca`` uses on
large pools) against the exact coefficient on the same features: for each K of ``--ks``, K-means
labels of the first ``--n`` rows (default 20 000), the exact value and the estimate from
``--sample`` rows (default 5000, ``ca``'s default) for ``--repeats`` seeds, one JSON line per K.

``--projection-error`` measures what ``kmedian``'s principal-component projection (pools over
``max_rows`` rows wider than ``max_dims``) costs in coverage: on blobs (default n = 40 000, use
``--d 512``) or on real features (``--from-npy``, with ``--max-rows``/``--cell-rows`` lowered to force
the large-pool path), the picks with and without the projection are scored in the original space by
the mean L1 and Euclidean distance of every row to its nearest pick, beside random picks, for
``--repeats`` seeds.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SIZES = (10_000, 100_000, 1_000_000)
_GEN_CHUNK = 1 << 16


def features_path(cache: Path, n: int, d: int, blobs: int, seed: int) -> Path:
    return cache / f"blobs_n{n}_d{d}_k{blobs}_s{seed}.npy"


def make_features(path: Path, n: int, d: int, blobs: int, seed: int) -> Path:
    """Write (n, d) float32 blob features to ``path`` (once; reused when present)."""
    if path.exists():
        return path
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 3.0, (blobs, d)).astype(np.float32)  # (blobs, d)
    weights = rng.uniform(0.5, 1.5, blobs)
    which = rng.choice(blobs, size=n, p=weights / weights.sum())  # (n,) blob of each row
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + f".{os.getpid()}.tmp.npy")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, d))
    for s in range(0, n, _GEN_CHUNK):
        w = which[s : s + _GEN_CHUNK]
        out[s : s + len(w)] = centres[w] + rng.standard_normal((len(w), d), dtype=np.float32)
    out.flush()
    del out
    tmp.rename(path)  # atomic: a half-written file is never picked up
    return path


def _status_mb(key: str) -> float:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{key}:\s+(\d+) kB", text, re.M).group(1)) / 1024.0


def child(args: argparse.Namespace) -> None:
    """One measurement in this (fresh) process; prints one JSON line."""
    from coldseg.select.registry import get_selector

    selector = get_selector(args.child)  # imports the strategy modules outside the timed region
    X = np.load(args.features)  # fully in memory, as a real pool's features would be
    n, d = X.shape
    budget = max(1, round(args.budget_frac * n))
    row = {"selector": args.child, "n": n, "d": d, "budget": budget}
    # a strategy that reads per-image side arrays (hard-contrast: MoCo's confidence) gets uniform draws,
    # made before the timer, like the features
    side = {k: np.random.default_rng(args.seed).uniform(0.0, 1.0, n) for k in selector.needs} or None
    loaded = _status_mb("VmRSS")
    t = time.perf_counter()
    selector.select(X, budget, random_state=args.seed, side=side)
    row.update(seconds=round(time.perf_counter() - t, 3), peak_rss_mb=round(_status_mb("VmHWM"), 1),
               loaded_rss_mb=round(loaded, 1))
    print(json.dumps(row), flush=True)


def measure(name: str, path: Path, n: int, d: int, args: argparse.Namespace) -> dict:
    """Run one child; return its JSON row (or a row with the error)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--child", name, "--features", str(path),
           "--budget-frac", str(args.budget_frac), "--seed", str(args.seed)]
    budget = max(1, round(args.budget_frac * n))
    row = {"selector": name, "n": n, "d": d, "budget": budget, "seconds": None, "peak_rss_mb": None}
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {**row, "error": f"timeout after {args.timeout} s"}
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
    if res.returncode != 0 or not lines:
        tail = (res.stderr.strip().splitlines() or ["no output"])[-1]
        return {**row, "error": f"exit {res.returncode}: {tail[:300]}"}
    return json.loads(lines[-1])


def silhouette_error(args: argparse.Namespace) -> None:
    """One JSON line per K: exact silhouette, and the stratified estimates' errors over seeds."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    from coldseg.select.silhouette import SilhouetteSample

    n = args.n or 20_000
    path = make_features(features_path(args.cache, n, args.d, args.blobs, args.seed), n, args.d, args.blobs,
                         args.seed)
    X = np.load(path)
    samples = [SilhouetteSample(X, args.sample, seed=r) for r in range(args.repeats)]
    for k in [int(k) for k in args.ks.split(",")]:
        labels = KMeans(k, n_init=1, random_state=args.seed).fit_predict(X.astype(np.float64))
        exact = float(silhouette_score(X, labels))
        est = [S.score(labels, seed=(r, k))[0] for r, S in enumerate(samples)]
        err = [e - exact for e in est]
        print(json.dumps({"n": n, "k": k, "sample": args.sample, "exact": round(exact, 5),
                          "estimates": [round(e, 5) for e in est],
                          "max_abs_error": round(max(abs(e) for e in err), 5),
                          "mean_error": round(float(np.mean(err)), 5)}), flush=True)


def _nearest_pick(X: np.ndarray, picks: np.ndarray) -> tuple[float, float]:
    """Mean L1 and mean Euclidean distance of every row of X to its nearest pick, in X's own space."""
    from coldseg.select.kmeans import _assign_numpy
    from coldseg.select.kmedian import l1_assign

    P = X[picks]
    l2 = np.linalg.norm((X - P[_assign_numpy(X, P)]).astype(np.float64), axis=1)
    return float(l1_assign(X, P)[1].mean()), float(l2.mean())


def projection_error(args: argparse.Namespace) -> None:
    """kmedian on the large-pool path with and without the principal-component projection, scored in
    the original space (mean L1 / Euclidean distance of every row to its nearest pick), beside random
    picks for scale. One JSON line per variant and seed."""
    from coldseg.select.kmedian import KMedian

    if args.from_npy:
        X = np.ascontiguousarray(np.load(args.from_npy), dtype=np.float32)
        source = str(args.from_npy)
    else:
        n = args.n or 40_000
        X = np.load(make_features(features_path(args.cache, n, args.d, args.blobs, args.seed), n, args.d,
                                  args.blobs, args.seed))
        source = f"blobs n={n} d={args.d} k={args.blobs}"
    n, d = X.shape
    budget = max(1, round(args.budget_frac * n))
    variants = {"exact": d, "projected": args.max_dims}
    for r in range(args.repeats):
        for name, dims in variants.items():
            sel = KMedian(max_rows=args.max_rows, cell_rows=args.cell_rows, max_dims=dims)
            t = time.perf_counter()
            out = sel.select(X, budget, random_state=args.seed + r)
            secs = time.perf_counter() - t
            l1, l2 = _nearest_pick(X, out.indices)
            print(json.dumps({"source": source, "n": n, "d": d, "budget": budget, "variant": name,
                              "seed": args.seed + r, "max_rows": args.max_rows, "cell_rows": args.cell_rows,
                              "projected_dims": out.info.get("projected_dims"),
                              "projected_variance": out.info.get("projected_variance"),
                              "mean_l1_to_nearest_pick": round(l1, 4), "mean_l2_to_nearest_pick": round(l2, 4),
                              "seconds": round(secs, 2)}), flush=True)
        picks = np.random.default_rng(args.seed + r).choice(n, budget, replace=False)
        l1, l2 = _nearest_pick(X, picks)
        print(json.dumps({"source": source, "n": n, "d": d, "budget": budget, "variant": "random",
                          "seed": args.seed + r, "mean_l1_to_nearest_pick": round(l1, 4),
                          "mean_l2_to_nearest_pick": round(l2, 4)}), flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, help="one pool size (default: 10^4, 10^5 and 10^6)")
    p.add_argument("--selectors", help="comma-separated subset (default: every registered selector)")
    p.add_argument("--d", type=int, default=128)
    p.add_argument("--blobs", type=int, default=50)
    p.add_argument("--budget-frac", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=None, help="seconds per measurement (default: none)")
    p.add_argument("--cache", type=Path, default=Path("/tmp/coldseg_selection_scale"))
    p.add_argument("--silhouette-error", action="store_true", help="measure the silhouette estimate's error")
    p.add_argument("--ks", default="2,3,5,10,15,20", help="K values for --silhouette-error")
    p.add_argument("--sample", type=int, default=5000, help="silhouette sample for --silhouette-error")
    p.add_argument("--repeats", type=int, default=5, help="seeds for --silhouette-error")
    p.add_argument("--projection-error", action="store_true",
                   help="kmedian with and without its principal-component projection, scored in the original space")
    p.add_argument("--from-npy", type=Path, help="features (n, d) for --projection-error instead of blobs")
    p.add_argument("--max-rows", type=int, default=20_000, help="kmedian max_rows for --projection-error")
    p.add_argument("--cell-rows", type=int, default=1000, help="kmedian cell_rows for --projection-error")
    p.add_argument("--max-dims", type=int, default=128, help="kmedian max_dims for --projection-error")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--features", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child(args)
    if args.silhouette_error:
        return silhouette_error(args)
    if args.projection_error:
        return projection_error(args)
    if args.selectors:
        names = [s.strip() for s in args.selectors.split(",") if s.strip()]
    else:
        from coldseg.select.registry import available

        names = available()
    for n in [args.n] if args.n else SIZES:
        if n < 2:
            p.error(f"--n {n} must be at least 2")
        path = make_features(features_path(args.cache, n, args.d, args.blobs, args.seed), n, args.d,
                             args.blobs, args.seed)
        for name in names:
            print(json.dumps(measure(name, path, n, args.d, args)), flush=True)


if __name__ == "__main__":
    main()
