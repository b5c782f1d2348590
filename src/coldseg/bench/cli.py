"""``coldseg benchmark`` and ``coldseg report``: argparse builders and their handlers.

The main CLI calls ``add_benchmark_parser(sub)`` and ``add_report_parser(sub)``; each sets
``handler`` on its namespace. Handlers return an exit code and raise ValueError for bad input.
"""
from __future__ import annotations

import argparse
import shlex
from pathlib import Path

TINY = {"image_size": 32, "steps": 10, "ssl_epochs": 1, "ssl_min_steps": 0, "batch_size": 8, "channels": "8,16,32"}


def _floats(text: str) -> list[float]:
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma list of percentages, e.g. 5,10,20") from None


def _names(text: str) -> list[str]:
    from coldseg.select.registry import split_specs

    return list(dict.fromkeys(split_specs(text)))


def add_benchmark_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("benchmark", help="compare strategies by training U-Nets on their picks", description=(
        "For every strategy × ratio × seed (plus the full-label upper bound), pick that share of the pool, "
        "train a U-Net on the picks and score it on a fixed test split. Every finished run is appended to "
        "OUT/results.csv at once; rerunning the same command skips finished runs. Ends by writing "
        "figure.png, report.md and report.html."))
    p.add_argument("data_dir", type=Path, metavar="DATA_DIR", help="folder with images/ and masks/ (same stems)")
    p.add_argument("--strategies", type=_names, default=None,
                   help="comma list (default: every one-shot and iterative strategy); see `coldseg strategies`")
    p.add_argument("--ratios", type=_floats, default=[5.0, 10.0, 20.0], help="percent of the pool (default 5,10,20)")
    p.add_argument("--seeds", type=int, default=3, metavar="N", help="seeds 0..N-1 (default 3)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder (resumable)")
    p.add_argument("--image-size", type=int, default=None, metavar="PX", help="working size (default 128)")
    p.add_argument("--steps", type=int, default=None, metavar="N", help="U-Net optimisation steps (default 1500)")
    p.add_argument("--batch-size", type=int, default=None, metavar="B", help="U-Net batch size (default 32)")
    p.add_argument("--channels", default=None, help="U-Net channels per level (default 32,64,128,256,512)")
    p.add_argument("--test-fraction", type=float, default=0.2, metavar="F", help="test share (default 0.2)")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the pool/test split, shared by all runs")
    p.add_argument("--evaluate-on", choices=["test", "validation"], default="test",
                   help="score on the test split (default) or on a validation split carved from the pool, for "
                        "design choices that must never see the test set")
    p.add_argument("--multiclass", action="store_true", help="mask pixel values are class ids")
    p.add_argument("--masks-dir", default="masks", help="mask folder inside DATA_DIR (default masks)")
    p.add_argument("--rounds", type=int, default=3, metavar="R", help="rounds of the iterative strategies (default 3)")
    p.add_argument("--features", default="moco-backbone",
                   choices=["moco-backbone", "moco", "moco-multiscale", "pixels"],
                   help="features for one-shot strategies: moco-backbone (self-supervised MoCo, the ResNet's "
                        "pooled 512-d output, as `coldseg select` uses; default), moco (the same training, its "
                        "128-d projection head's output), moco-multiscale (every ResNet stage's pooled output, "
                        "960-d) or pixels (cheap)")
    p.add_argument("--ssl-epochs", type=int, default=None, metavar="E", help="MoCo epochs (default: MoCo's)")
    p.add_argument("--ssl-batch-size", type=int, default=None, metavar="B", help="MoCo batch (default: MoCo's)")
    p.add_argument("--ssl-min-steps", type=int, default=None, metavar="N",
                   help="MoCo trains at least N SGD steps, adding epochs on small pools (default: MoCo's)")
    p.add_argument("--ssl-candidates", default=None, metavar="SET",
                   help="eq. 7 augmentation candidates for MoCo: auto (default), none (the rule off), or a comma "
                        "list of crop,color,grayscale,blur,rotation,gamma,contrast,noise")
    p.add_argument("--feature-seeds", type=int, default=None, metavar="F",
                   help="train F encoders only; seed s selects from encoder s %% F (default: one per seed)")
    p.add_argument("--feature-seed-offset", type=int, default=None, metavar="N",
                   help="the encoders' seeds start at N (default 0): N + s %% F, a new set of encoders for a "
                        "replication on the same machine")
    p.add_argument("--no-full", action="store_true", help="skip the full-label upper bound")
    p.add_argument("--workers", type=int, default=None, metavar="W", help="trainings in parallel worker processes "
                   "(default: none; on a GPU --stack is the default instead)")
    p.add_argument("--stack", type=int, default=None, metavar="G", help="U-Nets trained together in one process as "
                   "one grouped network (default: 8 on a GPU, 1 on CPU); not with --workers > 1")
    p.add_argument("--device", default=None, help="auto (default), cpu or cuda[:i]")
    p.add_argument("--tiny", action="store_true", help="CI smoke mode: 32 px, 10 steps, tiny U-Net, 1 MoCo epoch "
                   "(explicit flags still win)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(handler=cmd_benchmark)
    return p


def add_report_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("report", help="re-render a benchmark's figure and reports", description=(
        "Rewrite DIR/figure.png, DIR/report.md and DIR/report.html from DIR/results.csv (and settings.json)."))
    p.add_argument("out_dir", type=Path, metavar="DIR")
    p.set_defaults(handler=cmd_report)
    return p


def config_from_args(args: argparse.Namespace):
    """The BenchmarkConfig a parsed ``benchmark`` command stands for (validated)."""
    from coldseg.bench.sweep import BenchmarkConfig, strategy_kinds
    from coldseg.segment.train import SegConfig

    def pick(name):
        v = getattr(args, name)
        return TINY[name] if v is None and args.tiny else v

    if args.strategies is None:
        from coldseg.iterative import iterative_names
        from coldseg.select.registry import available

        args.strategies = available() + iterative_names()
    strategy_kinds(args.strategies)             # unknown names fail here, before any data is read
    if args.seeds < 1:
        raise ValueError(f"--seeds {args.seeds} must be at least 1")
    if args.ssl_batch_size is not None and args.ssl_batch_size < 2:
        raise ValueError(f"--ssl-batch-size {args.ssl_batch_size} must be at least 2")
    if pick("ssl_min_steps") is not None and pick("ssl_min_steps") < 0:
        raise ValueError(f"--ssl-min-steps {args.ssl_min_steps} must be 0 or more")
    if args.ssl_candidates is not None:                # MocoConfig checks the names, before any data is read
        from coldseg.features.train import MocoConfig

        try:
            MocoConfig(candidates=args.ssl_candidates)
        except ValueError as e:
            raise ValueError(f"--ssl-candidates: {e}") from None
    if args.feature_seeds is not None and args.feature_seeds < 1:
        raise ValueError(f"--feature-seeds {args.feature_seeds} must be at least 1")
    if args.feature_seed_offset is not None and args.feature_seed_offset < 0:
        raise ValueError(f"--feature-seed-offset {args.feature_seed_offset} must be 0 or more")
    seg_kw = {}
    for name, key in (("steps", "steps"), ("batch_size", "batch_size")):
        if pick(name) is not None:
            seg_kw[key] = int(pick(name))
    if pick("channels") is not None:
        try:
            seg_kw["channels"] = tuple(int(c) for c in str(pick("channels")).split(","))
        except ValueError:
            raise ValueError(f"--channels {pick('channels')!r} must be a comma list of integers, e.g. 16,32,64") from None
    device = None if args.device in (None, "auto") else args.device
    from coldseg.features.distributed import check_device

    check_device(device, "--device")                   # before any image is read
    return BenchmarkConfig(
        data_dir=args.data_dir, out_dir=args.out, strategies=args.strategies, ratios=args.ratios,
        seeds=list(range(args.seeds)), image_size=pick("image_size") or 128, seg=SegConfig(**seg_kw),
        test_fraction=args.test_fraction, split_seed=args.split_seed, multiclass=args.multiclass,
        evaluate_on=args.evaluate_on, masks_dir=args.masks_dir, rounds=args.rounds, features=args.features,
        ssl_epochs=pick("ssl_epochs"), ssl_batch_size=args.ssl_batch_size, ssl_min_steps=pick("ssl_min_steps"),
        ssl_candidates=args.ssl_candidates, feature_seeds=args.feature_seeds,
        feature_seed_offset=args.feature_seed_offset or 0, include_full=not args.no_full,
        workers=args.workers, stack=args.stack, device=device,
        progress=not args.quiet,
        command=canonical_command(args))


def canonical_command(args: argparse.Namespace) -> str:
    """The command with every option spelled out, so the report shows exactly what ran."""
    parts = ["coldseg", "benchmark", str(args.data_dir), "--strategies", ",".join(args.strategies or []),
             "--ratios", ",".join(f"{r:g}" for r in args.ratios), "--seeds", str(args.seeds), "--out", str(args.out)]
    for flag in ("image_size", "steps", "batch_size", "channels", "ssl_epochs", "ssl_batch_size", "ssl_min_steps",
                 "ssl_candidates", "feature_seeds", "feature_seed_offset", "workers", "stack", "device"):
        v = getattr(args, flag)
        if v is not None:
            parts += ["--" + flag.replace("_", "-"), str(v)]
    parts += ["--test-fraction", f"{args.test_fraction:g}", "--split-seed", str(args.split_seed),
              "--rounds", str(args.rounds), "--features", args.features, "--masks-dir", args.masks_dir]
    if args.evaluate_on != "test":
        parts += ["--evaluate-on", args.evaluate_on]
    parts += [f for f, on in (("--multiclass", args.multiclass), ("--no-full", args.no_full),
                              ("--tiny", args.tiny)) if on]
    return shlex.join(parts)


def cmd_benchmark(args: argparse.Namespace) -> int:
    from coldseg.bench.sweep import run_benchmark

    cfg = config_from_args(args)
    res = run_benchmark(cfg)
    print(f"{res.new_runs} new run(s), {res.skipped_runs} already in {res.out_dir / 'results.csv'}; "
          f"{res.wall_seconds:.0f} s")
    for what, path in res.report.items():
        print(f"{what}: {path}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from coldseg.bench.report import write_report

    for what, path in write_report(args.out_dir).items():
        print(f"{what}: {path}")
    return 0
