"""Train one encoder of a benchmark folder ahead of the sweep, so several can train side by side.

    python scripts/train_encoder.py --feature-seed 1 -- <the benchmark's own arguments>

e.g. on a 2-core machine, with the folder's command (its `settings.json` holds it), in two shells:

    OMP_NUM_THREADS=1 python scripts/train_encoder.py --feature-seed 0 -- ../shared/data/isic2017 --out DIR ...
    OMP_NUM_THREADS=1 python scripts/train_encoder.py --feature-seed 1 -- ../shared/data/isic2017 --out DIR ...

then the benchmark command itself, which finds both encoders' features cached and goes straight to the
U-Nets. `coldseg benchmark` trains its encoders one after the other in one process; this splits that
step across processes. The features are exactly those the benchmark would compute (same pool, same
settings, same cache file, written atomically); an encoder whose features are cached already is not
trained again, and a stopped training resumes from its last epoch. Do not run it beside a benchmark
invocation on the same folder that may reach the same encoder.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--" not in argv:
        print("train_encoder: give the benchmark's arguments after `--`", file=sys.stderr)
        return 2
    cut = argv.index("--")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--feature-seed", type=int, required=True, help="the encoder to train (0 .. F-1)")
    own = ap.parse_args(argv[:cut])

    from coldseg.bench.cli import add_benchmark_parser, config_from_args
    from coldseg.bench.features import cached_features
    from coldseg.bench.sweep import MOCO_LAYERS, _features_fn, evaluation_split
    from coldseg.data.pairs import load_pairs
    from coldseg.select.registry import get_selector

    sub = argparse.ArgumentParser(prog="coldseg").add_subparsers()
    cfg = config_from_args(add_benchmark_parser(sub).parse_args(argv[cut + 1:]))
    if cfg.features not in MOCO_LAYERS:
        print(f"train_encoder: --features {cfg.features} trains no encoder", file=sys.stderr)
        return 2
    n_enc = cfg.feature_seeds if cfg.feature_seeds is not None else len(cfg.seeds)
    if not 0 <= own.feature_seed < n_enc:
        print(f"train_encoder: --feature-seed {own.feature_seed} is not one of the folder's 0..{n_enc - 1}",
              file=sys.stderr)
        return 2
    pairs = load_pairs(cfg.data_dir, cfg.image_size, multiclass=cfg.multiclass, progress=cfg.progress,
                       masks_dir=cfg.masks_dir)
    pool_idx, _ = evaluation_split(cfg, pairs.ids, pairs.groups)
    out = Path(cfg.out_dir)
    path = out / "features" / f"{cfg.features}-seed{own.feature_seed}.npy"
    needs = tuple(sorted({k for s in cfg.strategies if s in _oneshot() for k in get_selector(s).needs}))
    X, side = cached_features(_features_fn(cfg, out), pairs.images[pool_idx], own.feature_seed, path, needs)
    print(f"{path}: {X.shape[0]} x {X.shape[1]} features" + (f", side arrays {sorted(side)}" if side else ""))
    return 0


def _oneshot() -> set[str]:
    from coldseg.select.registry import available

    return set(available())


if __name__ == "__main__":
    raise SystemExit(main())
