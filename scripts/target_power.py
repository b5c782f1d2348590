"""How often would issue 4's check pass (or fail) a selector, given how noisy the measured gains are?

The check (``coldseg.bench.target``, ``scripts/target_check.py``) averages n per-seed paired
differences d_s = strategy − random (Dice points, mean over 5/10/20 %) and passes the gain when the
mean is >= ``--target``; it fails "never below random" when some ratio's 95 % t-interval over seeds lies
entirely below 0. From a measured folder this script takes the spread of d_s (and of each ratio's
difference) and says, for a selector whose *true* gain is g, how often the check with ``--seeds`` seeds
passes it, how many seeds an 80 % chance would need, and how often a ratio comes out "below random"
by chance. A bootstrap of the measured d_s (shifted to mean g) checks the normal approximation.
Seeds that share an encoder (``--feature-seeds``) are read as independent; the issue's seeds each have
their own encoder, whose extra spread a folder with few encoders can understate.

``--draws FOLDER`` (fixed random draws, see ``scripts/draw_spread.py``) adds the floor: even a selector
whose pick never changes with the seed is compared with a new random draw at every seed, so its d_s
spread is at least sqrt(sd_draw² + 2·sd_train²).

    python scripts/target_power.py docs/results/kvasir_seg_cpu64_test_backbone_f3:herding \\
        --draws docs/results/kvasir_seg_cpu64_validation_draws [--seeds 5] [--target 1.0]
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
from scipy.stats import chi2

from coldseg.bench import results as R
from coldseg.bench.stats import MEAN, below_probability, draw_spread, draw_tables, pass_probability, seeds_needed
from coldseg.bench.target import paired_table

RATIOS = [5.0, 10.0, 20.0]


def sd_interval(sd: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Chi-square interval of a normal sample's sd from n values."""
    a = (1 - confidence) / 2
    return (sd * math.sqrt((n - 1) / chi2.ppf(1 - a, n - 1)), sd * math.sqrt((n - 1) / chi2.ppf(a, n - 1)))


def boot_pass(gains: np.ndarray, true_gain: float, target: float, n: int, reps: int, seed: int = 0) -> float:
    """Share of ``reps`` resamples of n per-seed gains (the measured ones moved to mean ``true_gain``)
    whose mean reaches ``target``."""
    rng = np.random.default_rng(seed)
    centred = gains - gains.mean() + true_gain
    means = centred[rng.integers(0, len(gains), (reps, n))].mean(axis=1)   # (reps,)
    return float((means >= target).mean())


def below_any(true_gain: float, sds: list[float], n: int) -> float:
    """P(at least one ratio's interval lies entirely below 0), ratios independent, each at true_gain."""
    return 1.0 - float(np.prod([1.0 - below_probability(true_gain, s, n) for s in sds]))


def read_rows(folder: Path) -> list[dict]:
    rows = R.read_results(folder)
    if not rows:
        raise SystemExit(f"target_power: {folder / R.RESULTS} is missing or empty; give a benchmark folder")
    return rows


def fmt_n(k: int | None) -> str:
    return "never" if k is None else str(k)


def report(label: str, sd: float, sd_ratio: list[float], args, gains: np.ndarray | None = None) -> None:
    """The table of verdicts for one measured (or floor) spread."""
    head = f"| true gain | P(gain ≥ +{args.target:g}) with {args.seeds} seeds"
    head += " [bootstrap] |" if gains is not None else " |"
    print(f"\n{label}\n\n{head} seeds for {100 * args.power:.0f} % "
          f"| P(some ratio 'below random') with {args.seeds} seeds |")
    print("|---|---|---|---|")
    for g in args.gains:
        p = pass_probability(g, args.target, sd, args.seeds)
        b = f" [{boot_pass(gains, g, args.target, args.seeds, args.boot):.2f}]" if gains is not None else ""
        print(f"| {g:+.2f} | {p:.2f}{b} | {fmt_n(seeds_needed(g, args.target, sd, args.power))} "
              f"| {below_any(g, sd_ratio, args.seeds):.3f} |")


def measured(spec: str, args) -> None:
    path, _, strategy = spec.rpartition(":")
    if not path or not strategy:
        raise SystemExit(f"target_power: {spec!r} is not FOLDER:STRATEGY")
    folder = Path(path)
    rows = read_rows(folder)
    seeds, D = paired_table(rows, strategy, RATIOS)
    if len(seeds) < 3:
        raise SystemExit(f"target_power: {folder} has {len(seeds)} seeds where `{strategy}` and random both ran "
                         "5, 10 and 20 %; the spread needs at least 3")
    D = 100.0 * D                                        # (n_seeds, 3) Dice points
    gains = D.mean(axis=1)                               # (n_seeds,)
    sd = float(gains.std(ddof=1))
    sd_ratio = [float(s) for s in D.std(axis=0, ddof=1)]
    if not min([sd] + sd_ratio) > 0:
        raise SystemExit(f"target_power: `{strategy}` − random in {folder} has the same value on every seed at some "
                         "ratio (sd 0), so there is no spread to read; are these copied rows?")
    lo, hi = sd_interval(sd, len(seeds))
    encoders = (R.read_settings(folder) or {}).get("settings", {}).get("feature_seeds")
    shared = f", seeds sharing {encoders} encoders" if encoders else ""
    label = (f"**{strategy}** in {folder} ({rows[0]['dataset']}; {len(seeds)} seeds{shared}): measured gain "
             f"{gains.mean():+.2f}, sd of the per-seed gain {sd:.2f} [{lo:.2f}, {hi:.2f}]; per ratio sd "
             + " / ".join(f"{s:.2f}" for s in sd_ratio))
    report(label, sd, sd_ratio, args, gains)


def floor(folder: Path, args) -> None:
    rows = read_rows(folder)
    try:
        tables, draws, seeds = draw_tables(rows)
    except ValueError as e:
        raise SystemExit(f"target_power: {folder}: {e}") from None
    spread = {q: draw_spread(Y) for q, Y in tables.items()}
    lowest = {q: math.sqrt(d.sd_draw ** 2 + 2 * d.sd_train ** 2) for q, d in spread.items()}
    ratios = [q for q in tables if q != MEAN]
    label = (f"**floor from fixed draws** in {folder} ({rows[0]['dataset']}; {len(draws)} draws × {len(seeds)} "
             f"seeds): a selector whose pick never changes, against a new random draw per seed: sd of the "
             f"per-seed gain ≥ {lowest[MEAN]:.2f}; per ratio ≥ " + " / ".join(f"{lowest[q]:.2f}" for q in ratios))
    report(label, lowest[MEAN], [lowest[q] for q in ratios], args)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("specs", nargs="*", metavar="FOLDER:STRATEGY", help="a measured strategy against random")
    ap.add_argument("--draws", action="append", default=[], type=Path, metavar="FOLDER",
                    help="a folder of fixed random draws: the floor of the spread")
    ap.add_argument("--seeds", type=int, default=5, help="seeds of the check (issue 4: 5; default 5)")
    ap.add_argument("--target", type=float, default=1.0, help="gain target in points (default 1.0)")
    ap.add_argument("--gains", type=lambda s: [float(x) for x in s.split(",")], default=[0.0, 0.5, 1.0, 1.5, 2.0, 3.0],
                    help="true gains to place (points, comma-separated)")
    ap.add_argument("--power", type=float, default=0.8, help="chance of passing to size the seeds for (default 0.8)")
    ap.add_argument("--boot", type=int, default=20000, help="bootstrap resamples (default 20000)")
    args = ap.parse_args(argv)
    if not args.specs and not args.draws:
        ap.error("give at least one FOLDER:STRATEGY or --draws FOLDER")
    if args.seeds < 2:
        ap.error("--seeds must be at least 2 (a t-interval needs two)")
    if not 0 < args.power < 1:
        ap.error(f"--power {args.power} must lie strictly between 0 and 1 (e.g. 0.8)")
    for spec in args.specs:
        measured(spec, args)
    for folder in args.draws:
        floor(folder, args)
    k = 5 * len(RATIOS)
    print(f"\nA selector exactly as good as random at every ratio of all five datasets ({k} cells) comes out "
          f"'below random' somewhere with probability {1 - (1 - below_probability(0.0, 1.0, args.seeds)) ** k:.2f} "
          f"(each cell {below_probability(0.0, 1.0, args.seeds):.3f}, cells taken as independent).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
