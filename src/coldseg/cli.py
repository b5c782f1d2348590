"""Command line: ``coldseg select | embed | strategies | benchmark | report``."""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


def _common_training(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0,
                   help="random seed; the same seed gives the same result on the same machine and thread count "
                        "(trained features differ across CPU models; --features reproduces a pick list anywhere) "
                        "(default 0)")
    p.add_argument("--image-size", type=int, default=128, metavar="PX", help="working size in pixels (default 128)")
    p.add_argument("--epochs", type=int, default=30, metavar="E", help="MoCo training epochs (default 30)")
    p.add_argument("--batch-size", type=int, default=32, metavar="B", help="MoCo batch size (default 32)")
    p.add_argument("--min-steps", type=int, default=None, metavar="N",
                   help="MoCo trains at least N SGD steps: small pools get more epochs (default 3000)")
    from coldseg.features.moco import FEATURE_LAYERS

    p.add_argument("--feature-layer", choices=FEATURE_LAYERS, default=FEATURE_LAYERS[0],
                   help="features from the encoder's pooled 512-d backbone output (default; it picked better on "
                        "validation splits), its 128-d projection head (the paper's; 4x less memory) or every "
                        "ResNet stage's pooled output side by side (960-d). Switching layers reuses the cached "
                        "training")
    p.add_argument("--resume", action="store_true", help="continue an interrupted MoCo training from its checkpoint")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:i]")
    p.add_argument("--cache-dir", default=None,
                   help="where features and checkpoints are cached (default $COLDSEG_CACHE_DIR, else "
                        "$XDG_CACHE_HOME/coldseg, else ~/.cache/coldseg)")
    p.add_argument("--candidates", default="auto",
                   help="eq. 7 augmentation candidates: auto, none, or a comma list of "
                        "crop,color,grayscale,blur,rotation,gamma,contrast,noise")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    from coldseg import __version__
    from coldseg.api import DEFAULT_STRATEGY

    ap = argparse.ArgumentParser(prog="coldseg", description="Which images to annotate before any label exists.")
    ap.add_argument("--version", action="version", version=f"coldseg {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)

    s = sub.add_parser("select", help="pick the images to annotate", description=(
        "Train a self-supervised encoder on the images (or read --features), then pick BUDGET images to "
        "annotate. Writes selection.csv, selected.txt, labelstudio.json, manifest.json, features.npy, feature_ids.txt "
        "and report.html into --out."))
    s.add_argument("images_dir", metavar="IMAGES_DIR")
    s.add_argument("--budget", required=True, help="number of images (e.g. 50) or percentage of the pool (e.g. 10%%)")
    s.add_argument("--out", required=True, metavar="DIR", help="output folder")
    s.add_argument("--strategy", default=DEFAULT_STRATEGY, help=f"selection strategy (default {DEFAULT_STRATEGY}; "
                   "list them with `coldseg strategies`)")
    s.add_argument("--features", default=None, metavar="FILE",
                   help="use these features (.npy with feature_ids.txt, or .npz with features and ids) "
                        "instead of training")
    s.add_argument("--no-report", action="store_true", help="skip report.html and its figures")
    s.add_argument("--url-prefix", default=None,
                   help="Label Studio image URL prefix; the image's URL is the prefix, '/' (unless the prefix "
                        "ends with '/', '=' or '?') and its id (default: local-files storage paths)")
    _common_training(s)

    e = sub.add_parser("embed", help="compute features only", description=(
        "Train the self-supervised encoder and write features.npy, feature_ids.txt and manifest.json."))
    e.add_argument("images_dir", metavar="IMAGES_DIR")
    e.add_argument("--out", required=True, metavar="DIR")
    _common_training(e)

    sub.add_parser("strategies", help="list the selection strategies")

    try:
        from coldseg.bench.cli import add_benchmark_parser, add_report_parser
    except ImportError:
        pass
    else:
        add_benchmark_parser(sub)
        add_report_parser(sub)
    return ap


def _moco(args: argparse.Namespace):
    from coldseg.features.train import MocoConfig

    extra = {} if args.min_steps is None else {"min_steps": args.min_steps}
    return MocoConfig(image_size=args.image_size, epochs=args.epochs, batch_size=args.batch_size,
                      candidates=args.candidates, feature_layer=args.feature_layer, **extra)


def _path_arg(args: argparse.Namespace, key: str, name: str) -> None:
    """args.<key> (text) -> Path; an empty text is refused (Path("") would be the current folder)."""
    value = getattr(args, key, None)
    if value is None:
        return
    if value == "":
        raise ValueError(f"{name} must not be empty")
    setattr(args, key, Path(value))


def _check_training_args(args: argparse.Namespace) -> None:
    """Everything the command line can check before any image is read."""
    from coldseg.features.distributed import check_device

    _path_arg(args, "images_dir", "IMAGES_DIR")
    _path_arg(args, "out", "--out")
    _path_arg(args, "cache_dir", "--cache-dir")
    _path_arg(args, "features", "--features")
    if not 0 <= args.seed < 2**32:
        raise ValueError(f"--seed {args.seed} must be a whole number from 0 to {2**32 - 1}")
    check_device(args.device, "--device")
    if args.image_size < 16:
        raise ValueError(f"--image-size {args.image_size} is too small; use at least 16")
    if args.epochs < 1:
        raise ValueError(f"--epochs {args.epochs} must be at least 1")
    if args.batch_size < 2:
        raise ValueError(f"--batch-size {args.batch_size} must be at least 2")
    if args.min_steps is not None and args.min_steps < 0:
        raise ValueError(f"--min-steps {args.min_steps} must be 0 or more")


#: options that only shape the MoCo training, and so do nothing with --features
_TRAINING_ONLY = ("epochs", "batch_size", "min_steps", "feature_layer", "candidates", "resume", "cache_dir")


def _warn_unused_training(args: argparse.Namespace) -> None:
    """With --features nothing is trained: name the training options given that will have no effect."""
    if args.features is None:
        return
    defaults = build_parser().parse_args(["select", "x", "--budget", "1", "--out", "y"])
    given = [k for k in _TRAINING_ONLY if getattr(args, k) != getattr(defaults, k)]
    if given:
        flags = ", ".join("--" + k.replace("_", "-") for k in given)
        warnings.warn(f"{flags} shape the MoCo training, which --features replaces: ignored", stacklevel=2)


def cmd_select(args: argparse.Namespace) -> int:
    import coldseg
    from coldseg.select.registry import check_strategy

    _check_training_args(args)
    _warn_unused_training(args)
    check_strategy(args.strategy, "--strategy")  # a bad setting fails now, not after the training
    res = coldseg.select(args.images_dir, args.budget, out=args.out, strategy=args.strategy, seed=args.seed,
                         image_size=args.image_size, features=args.features, resume=args.resume,
                         device=args.device, cache_dir=args.cache_dir, report=not args.no_report,
                         url_prefix=args.url_prefix, moco=_moco(args), progress=not args.quiet)
    if res is None:  # a rank other than 0 under torchrun: rank 0 reports
        return 0
    info = res.selection.info
    k = f", K={info['k']}" if "k" in info else ""
    print(f"picked {len(res.ids)} of {len(res.pool)} images with '{args.strategy}'{k} -> {args.out}")
    if (args.out / "report.html").exists():
        print(f"report: {(args.out / 'report.html').resolve()}")
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    import coldseg

    _check_training_args(args)
    X = coldseg.embed(args.images_dir, args.out, seed=args.seed, image_size=args.image_size, resume=args.resume,
                      device=args.device, cache_dir=args.cache_dir, moco=_moco(args), progress=not args.quiet)
    if X is None:  # a rank other than 0 under torchrun
        return 0
    print(f"wrote {X.shape[0]} × {X.shape[1]} features -> {args.out / 'features.npy'}")
    return 0


def cmd_strategies(args: argparse.Namespace) -> int:
    from coldseg.api import DEFAULT_STRATEGY
    from coldseg.select.registry import available, selector_class

    for name in available():
        star = " (default)" if name == DEFAULT_STRATEGY else ""
        print(f"{name:14s} {selector_class(name).summary}{star}")
    from coldseg.iterative import get_iterative, iterative_names

    print("\nbenchmark only (they need labels between rounds):")
    for name in iterative_names():
        print(f"{name:14s} {get_iterative(name).summary}")
    return 0


COMMANDS = {"select": cmd_select, "embed": cmd_embed, "strategies": cmd_strategies}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = COMMANDS.get(args.command) or getattr(args, "handler", None)
    plain = warnings.formatwarning       # warnings read "coldseg: warning: ..." without a source line
    warnings.formatwarning = lambda message, category, filename, lineno, line=None: f"coldseg: warning: {message}\n"
    try:
        return handler(args)
    except KeyboardInterrupt:
        hint = ("Rerun the same command (--features: there is no training to resume)."
                if getattr(args, "features", None) else
                "Rerun with --resume to continue the training from its last epoch (a finished training is "
                "read from the cache either way).")
        print(f"coldseg: interrupted; nothing was written to the output folder. {hint}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ValueError, OSError, TypeError) as e:
        if os.environ.get("COLDSEG_DEBUG"):
            raise
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"coldseg: error: {msg}", file=sys.stderr)
        return EXIT_BAD_INPUT
    finally:
        warnings.formatwarning = plain


if __name__ == "__main__":
    sys.exit(main())
