"""How much does the choice of a pick set move Dice, against the U-Net's training noise?

Reads a benchmark folder with ``random[draw=j]`` rows (fixed draws: the same images for every seed, so
the seed changes only the training) and splits Dice, per ratio and for the mean over the ratios (issue
4's measure), into the spread between pick sets (sd_draw) and the training noise (sd_train); see
``coldseg.bench.stats.draw_spread``. It then says how many sd_draw a gain of ``--target`` points is, and
so which top share of random sets of that size a selector would have to pick to show it, and the
expected best of the draws run. ``--compare FOLDER:STRATEGY`` places another strategy's runs (same
split and settings, seeds in common) against the average draw at the same U-Net seed.

    python scripts/draw_spread.py docs/results/isic2017_cpu64_validation_draws_s1000 \\
        --compare docs/results/isic2017_cpu64_validation_backbone_s1000_e18:herding [--figure PNG]
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
from scipy.stats import norm

from coldseg.bench import results as R
from coldseg.bench.stats import MEAN, draw_spread, draw_tables, t_interval


def strategy_runs(folder: Path, strategy: str, seeds: list[int], ratios: list[float],
                  metric: str = "dice") -> dict:
    """{ratio or MEAN: {seed: value ×100}} of ``strategy`` in ``folder`` for the given seeds."""
    rows = [r for r in R.read_results(folder) if r["strategy"] == strategy and int(r["seed"]) in seeds]
    by = {(R.norm_ratio(r["ratio"]), int(r["seed"])): 100.0 * r[metric] for r in rows}
    out = {q: {s: by[(q, s)] for s in seeds if (q, s) in by} for q in ratios}
    out[MEAN] = {s: float(np.mean([by[(q, s)] for q in ratios])) for s in seeds
                 if all((q, s) in by for q in ratios)}
    return out


def expected_max(k: int) -> float:
    """E[max of k standard normals], by integration (k draws' best, in units of sd_draw)."""
    x = np.linspace(-8, 8, 16001)
    return float(np.trapezoid(x * k * norm.pdf(x) * norm.cdf(x) ** (k - 1), x))


def plot(path: Path, title: str, tables: dict, spreads: dict, placed: dict[str, dict], seeds: list[int],
         target: float) -> Path:
    """Dice of each fixed draw (mean over the U-Net seeds) minus the average draw at each ratio, a grey
    dot per draw; each compared strategy's runs the same way (coloured); the +target line."""
    from coldseg.report.plots import plt

    ratios = [q for q in tables if q != MEAN]
    fig, ax = plt.subplots(figsize=(2.4 + 1.3 * len(ratios), 4.6))
    for i, q in enumerate(ratios):
        Y = tables[q] - spreads[q].seed_means          # (J, S) against the average draw at each seed
        rows = Y.mean(axis=1)                           # (J,)
        ax.scatter(np.full(len(rows), i) + np.linspace(-0.12, 0.12, len(rows)), rows, s=18, color="grey",
                   label="fixed random draws" if i == 0 else None, zorder=2)
        ax.errorbar(i - 0.22, 0, yerr=1.96 * spreads[q].sd_draw, fmt="_", color="black", capsize=3,
                    label="±1.96 sd_draw" if i == 0 else None)
    colours = plt.get_cmap("tab10")
    for k, (name, runs) in enumerate(placed.items()):
        xs, ys = [], []
        for i, q in enumerate(ratios):
            got = runs.get(q, {})
            d = [v - spreads[q].seed_means[seeds.index(s)] for s, v in got.items()]
            if d:
                xs.append(i + 0.22 + 0.05 * k)
                ys.append(float(np.mean(d)))
        ax.scatter(xs, ys, s=30, marker="D", color=colours(k % 10), label=name, zorder=3)
    ax.axhline(0, color="grey", lw=0.6)
    ax.axhline(target, color="tab:red", lw=1, ls="--", label=f"+{target:g} (issue 4)")
    ax.set_xticks(range(len(ratios)), [f"{R.fmt_ratio(q)} %" for q in ratios])
    ax.set_ylabel("Dice − average draw (points)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2, frameon=False)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", type=Path)
    ap.add_argument("--target", type=float, default=1.0, help="gain in Dice points to place (default 1.0)")
    ap.add_argument("--compare", action="append", default=[], metavar="FOLDER:STRATEGY",
                    help="another folder's strategy, same split and settings, paired on U-Net seed")
    ap.add_argument("--figure", type=Path, default=None, help="also draw the draws and the compared runs (PNG)")
    args = ap.parse_args(argv)
    if not (args.folder / R.RESULTS).exists():
        raise SystemExit(f"draw_spread: {args.folder / R.RESULTS} does not exist; give a benchmark folder")
    rows = R.read_results(args.folder)
    try:
        tables, draws, seeds = draw_tables(rows)
    except ValueError as e:
        raise SystemExit(f"draw_spread: {e}") from None
    ratios = [q for q in tables if q != MEAN]
    print(f"{args.folder}: {len(draws)} fixed draws {draws} × U-Net seeds {seeds}, Dice points (×100)\n")
    print("| ratio | mean Dice | sd_draw [95 %] | sd_train | draw effect p | "
          f"+{args.target:g} in sd_draw (top share of sets) | best of {len(draws)} expected |")
    print("|---|---|---|---|---|---|---|")
    spreads = {}
    for q, Y in tables.items():
        d = spreads[q] = draw_spread(Y)
        label = "mean of " + "/".join(R.fmt_ratio(r) for r in ratios) + " %" if q == MEAN else f"{R.fmt_ratio(q)} %"
        z = args.target / d.sd_draw if d.sd_draw > 0 else math.inf
        share = f"{100 * norm.sf(z):.2g} %" if math.isfinite(z) else "none"
        print(f"| {label} | {d.mean:.2f} | {d.sd_draw:.2f} [{d.sd_draw_lo:.2f}, {d.sd_draw_hi:.2f}] | "
              f"{d.sd_train:.2f} | {d.p_draw:.2g} | {z:.1f} ({share}) | +{expected_max(len(draws)) * d.sd_draw:.2f} |")
    placed = {}
    for spec in [f"{args.folder}:random"] + args.compare:   # the folder's own plain random draws first
        path, _, strategy = spec.rpartition(":")
        if not path or not strategy:
            raise SystemExit(f"draw_spread: --compare {spec!r} is not FOLDER:STRATEGY")
        runs = strategy_runs(Path(path), strategy, seeds, ratios)
        if not any(runs.values()):
            if spec == f"{args.folder}:random":
                continue
            raise SystemExit(f"draw_spread: --compare {spec!r}: {path} has no `{strategy}` runs with U-Net "
                             f"seeds {seeds} at ratios {[R.fmt_ratio(q) for q in ratios]}")
        placed[f"{strategy} ({Path(path).name})"] = runs
        print(f"\n{strategy} ({path}) against the average draw at the same U-Net seed:")
        print("| ratio | seeds | gain [95 %] | in sd_draw |\n|---|---|---|---|")
        for q, d in spreads.items():
            got = runs[q]
            diffs = [v - d.seed_means[seeds.index(s)] for s, v in sorted(got.items())]
            if not diffs:
                continue
            mean, lo, hi, n = t_interval(diffs)
            label = "mean" if q == MEAN else f"{R.fmt_ratio(q)} %"
            zs = f"{mean / d.sd_draw:+.1f}" if d.sd_draw > 0 else "n/a"
            print(f"| {label} | {n} | {mean:+.2f} [{lo:+.2f}, {hi:+.2f}] | {zs} |")
    if args.figure:
        title = f"{args.folder.name}: {len(draws)} draws × {len(seeds)} U-Net seeds"
        print(f"\nfigure: {plot(args.figure, title, tables, spreads, placed, seeds, args.target)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
