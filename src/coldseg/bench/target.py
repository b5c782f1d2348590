"""Issue 4's acceptance test, read off benchmark folders: does a strategy beat ``random``?

Three checks per folder (one dataset each), all on paired differences (seed s of the strategy against
seed s of random, which share the split, the U-Net seed and, with ``--feature-seeds``, the encoder):

  gain    mean over ratios of (strategy − random) Dice, averaged per seed, with a 95 % t-interval
          over seeds (and over encoders when the folder shares encoders between seeds); the target
          asks ≥ +1.0 point on the ``GAIN_DATASETS``;
  below   at each ratio, whether the 95 % interval of the paired difference lies entirely below 0
          (the target: never, on any dataset);
  full    mean Dice at ``full_ratio`` % over the mean full-label Dice; the target asks ≥ 98 % at
          20 % on ``FULL_DATASETS``.

Beside them, the folder's **headroom**: mean over ratios of (full-label Dice − random Dice), in
points, per seed, with its 95 % interval. It is the gain a strategy would show if every one of its
cells reached full-label Dice, so a gain target above the headroom cannot be met at that folder's
settings (a subset beating the whole labelled pool is possible but was never measured here).

Whatever a folder's image size, device or split, the checks are computed the same way; the record
carries those settings so that a 64 px CPU stand-in is never mistaken for the GPU target.
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from coldseg.bench import results as R
from coldseg.bench.stats import BASELINE, full_minus_baseline, paired_differences, t_interval

GAIN_DATASETS = ("isic2017", "kvasir_seg")
FULL_DATASETS = ("isic2017",)


@dataclass
class TargetCheck:
    folder: str
    dataset: str
    strategy: str
    image_size: int | None
    device: str
    split: str                       # "test" or "validation"
    ratios: list[float]
    seeds: list[int]                 # seeds with every ratio for both the strategy and random
    gain: float                      # Dice points (×100), mean over ratios then seeds
    gain_lo: float
    gain_hi: float
    encoders: int | None             # feature seeds shared by the seeds, if any
    gain_enc_lo: float = math.nan    # the interval taken over encoders instead of seeds
    gain_enc_hi: float = math.nan
    per_ratio: dict[str, list[float]] = field(default_factory=dict)   # ratio -> [mean, lo, hi, n] (points)
    below: list[float] = field(default_factory=list)                  # ratios resolvably below random
    full_fraction: float = math.nan  # mean Dice at full_ratio / mean full-label Dice
    gain_target: float = 1.0
    headroom: float = math.nan       # points: mean over ratios and seeds of (full − random) Dice
    headroom_lo: float = math.nan
    headroom_hi: float = math.nan

    @property
    def gain_met(self) -> bool | None:
        """None where the dataset is not one the gain target names, or no seed ran every ratio."""
        if self.dataset not in GAIN_DATASETS or not self.seeds:
            return None
        return self.gain >= self.gain_target

    @property
    def full_met(self) -> bool | None:
        if self.dataset not in FULL_DATASETS or math.isnan(self.full_fraction):
            return None
        return self.full_fraction >= 0.98

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "gain_met": self.gain_met, "never_below": not self.below,
                "full_met": self.full_met}


def check_folder(folder: str | os.PathLike, strategy: str, ratios: list[float] | None = None,
                 full_ratio: float = 20.0, gain_target: float = 1.0) -> TargetCheck:
    """The three checks for ``strategy`` in one benchmark folder (ratios default to 5, 10, 20)."""
    rows = R.read_results(folder)
    if not rows:
        raise ValueError(f"{folder}: no benchmark results (results.csv missing or empty); "
                         "give a folder written by `coldseg benchmark --out`")
    if not any(r["strategy"] == strategy for r in rows):
        names = sorted({r["strategy"] for r in rows})
        raise ValueError(f"{folder}: no runs of {strategy!r} (it holds {', '.join(names)})")
    record = R.read_settings(folder) or {}
    settings = record.get("settings", {})
    ratios = [R.norm_ratio(r) for r in (ratios or [5, 10, 20])]
    cell = {(r["strategy"], r["ratio"], r["seed"]): r["dice"] for r in rows}
    seeds, table = paired_table(rows, strategy, ratios)
    per_seed = table.mean(axis=1)                                                          # (n_seeds,)
    gain, lo, hi, _ = t_interval(per_seed) if len(seeds) else (math.nan,) * 4
    encoders = settings.get("feature_seeds")
    enc_lo = enc_hi = math.nan
    if encoders and len(seeds):
        per_enc = [per_seed[[s % encoders == e for s in seeds]] for e in range(encoders)]
        _, enc_lo, enc_hi, _ = t_interval([g.mean() for g in per_enc if len(g)])
    per_ratio, below = {}, []
    for d in paired_differences(rows):
        if d.strategy != strategy or d.metric != "dice" or d.ratio not in ratios:
            continue
        per_ratio[R.fmt_ratio(d.ratio)] = [100 * d.mean, 100 * d.lo, 100 * d.hi, d.n]
        if d.hi < 0:
            below.append(d.ratio)
    at = [v for (st, r, _), v in cell.items() if st == strategy and r == R.norm_ratio(full_ratio)]
    full = [v for (st, _, _), v in cell.items() if st == R.FULL]
    frac = float(np.mean(at) / np.mean(full)) if at and full else math.nan
    room, room_lo, room_hi, _ = headroom(rows, ratios)
    dataset = rows[0]["dataset"]
    return TargetCheck(
        folder=str(folder), dataset=dataset, strategy=strategy, image_size=settings.get("image_size"),
        device=",".join(sorted({r["device"] for r in rows})), split=settings.get("evaluate_on", "test"), ratios=ratios, seeds=seeds,
        gain=100 * gain, gain_lo=100 * lo, gain_hi=100 * hi, encoders=encoders,
        gain_enc_lo=100 * enc_lo, gain_enc_hi=100 * enc_hi, per_ratio=per_ratio, below=below,
        full_fraction=frac, gain_target=gain_target,
        headroom=100 * room, headroom_lo=100 * room_lo, headroom_hi=100 * room_hi)


def paired_table(rows: list[dict[str, Any]], strategy: str, ratios: list[float],
                 metric: str = "dice") -> tuple[list[int], np.ndarray]:
    """(seeds, D): the seeds where ``strategy`` and random both ran every ratio, and D (n_seeds,
    n_ratios), strategy − random of ``metric`` at each (as stored: fractions for Dice). D's row means
    are the per-seed gains the gain check averages."""
    ratios = [R.norm_ratio(r) for r in ratios]
    cell = {(r["strategy"], r["ratio"], r["seed"]): r[metric] for r in rows}
    seeds = sorted({s for (st, _, s) in cell if st == strategy} & {s for (st, _, s) in cell if st == BASELINE})
    seeds = [s for s in seeds if all((st, r, s) in cell for st in (strategy, BASELINE) for r in ratios)]
    D = np.array([[cell[(strategy, r, s)] - cell[(BASELINE, r, s)] for r in ratios] for s in seeds],
                 dtype=np.float64).reshape(len(seeds), len(ratios))
    return seeds, D


def headroom(rows: list[dict[str, Any]], ratios: list[float]) -> tuple[float, float, float, int]:
    """(mean, lo, hi, n) over seeds of: full-label Dice of seed s minus random's Dice of seed s, averaged
    over ``ratios`` (fractions, not points). Seeds without a full-label run or without random at every
    ratio are left out; NaNs when none is left."""
    d = full_minus_baseline(rows)
    seeds = sorted({s for _, s in d})
    return t_interval([np.mean([d[(r, s)] for r in ratios]) for s in seeds if all((r, s) in d for r in ratios)])


def markdown(checks: list[TargetCheck]) -> str:
    """One row per folder: the gain with its intervals, the ratios below random, the full fraction."""
    def verdict(v: bool | None) -> str:
        return "n/a" if v is None else ("met" if v else "NOT met")

    lines = ["| dataset | split | px, device | strategy | seeds | gain (points) [95 % over seeds] | over encoders "
             "| per ratio | below random at | 20 % / full | headroom: full − random | gain ≥ +1 | never below "
             "| ≥ 98 % of full |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in checks:
        enc = f"[{c.gain_enc_lo:+.2f}, {c.gain_enc_hi:+.2f}] ({c.encoders})" if (c.encoders or 0) > 1 else "–"
        gain = (f"{c.gain:+.2f} [{c.gain_lo:+.2f}, {c.gain_hi:+.2f}]" if c.seeds else
                "– (no seed ran " + ", ".join(f"{R.fmt_ratio(r)}" for r in c.ratios) + " % for both)")
        if not c.seeds:
            enc = "–"
        per = "; ".join(f"{r}%: {v[0]:+.2f}" for r, v in c.per_ratio.items())
        below = ", ".join(f"{R.fmt_ratio(r)}%" for r in c.below) or "none"
        full = "–" if math.isnan(c.full_fraction) else f"{100 * c.full_fraction:.1f} %"
        room = "–" if math.isnan(c.headroom) else f"{c.headroom:+.2f}"
        lines.append(
            f"| {c.dataset} | {c.split} | {c.image_size}, {c.device} | `{c.strategy}` | {len(c.seeds)} "
            f"| {gain} | {enc} | {per} | {below} | {full} | {room} "
            f"| {verdict(c.gain_met)} | {verdict(not c.below)} | {verdict(c.full_met)} |")
    return "\n".join(lines)


def not_run(group: list[TargetCheck], strategies: list[str]) -> list[str]:
    """The strategies of the figure that have no check in this panel (not run on that dataset)."""
    have = {c.strategy for c in group}
    return [s for s in strategies if s not in have]


def plot_checks(path: str | os.PathLike, checks: list[TargetCheck]) -> Path:
    """Forest plot of the checks: one panel per dataset (split), one row per strategy, the gain over
    random (mean of the ratios) with its 95 % interval over seeds; each ratio's mean as a small mark,
    filled red where that ratio is resolvably below random. Lines at 0, at the +1 point target and
    (dotted) at the panel's headroom, where every cell would reach full-label Dice."""
    from coldseg.report.plots import plt

    panels: dict[str, list[TargetCheck]] = {}
    for c in checks:
        panels.setdefault(f"{c.dataset} ({c.split})", []).append(c)
    strategies = list(dict.fromkeys(c.strategy for c in checks))
    colours = {r: plt.get_cmap("viridis")(0.8 * i / max(1, len(checks[0].ratios) - 1))
               for i, r in enumerate(R.fmt_ratio(r) for r in checks[0].ratios)} if checks else {}
    fig, axes = plt.subplots(1, len(panels), figsize=(3.0 * len(panels) + 1.2, 0.45 * len(strategies) + 1.6),
                             sharey=True, squeeze=False)
    for ax, (title, group) in zip(axes[0], panels.items()):
        for c in group:
            y = strategies.index(c.strategy)
            if c.seeds:
                ax.errorbar(c.gain, y, xerr=[[c.gain - c.gain_lo], [c.gain_hi - c.gain]] if np.isfinite(c.gain_lo)
                            else None, fmt="o", color="black", ms=5, capsize=3, lw=1.2)
            for k, (r, v) in enumerate(c.per_ratio.items()):
                below = R.norm_ratio(float(r)) in c.below
                ax.plot(v[0], y + 0.18 + 0.08 * k, marker="v", ms=4, ls="",
                        color="red" if below else colours.get(r, "grey"),
                        markerfacecolor="red" if below else "none")
        for s in not_run(group, strategies):
            ax.text(0.5, strategies.index(s), "not run", transform=ax.get_yaxis_transform(),
                    ha="center", va="center", fontsize=7, color="grey")
        ax.axvline(0, color="grey", lw=0.8)
        ax.axvline(group[0].gain_target, color="grey", lw=0.8, ls="--")
        if np.isfinite(group[0].headroom):          # the strategies of a panel share random and full
            ax.axvline(group[0].headroom, color="tab:green", lw=1.0, ls=":")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("Dice − random (points)", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][0].set_yticks(range(len(strategies)), strategies, fontsize=8)
    axes[0][0].invert_yaxis()
    handles = [plt.Line2D([], [], marker="o", ls="", color="black", label="mean of the ratios, 95 % over seeds")]
    handles += [plt.Line2D([], [], marker="v", ls="", color=col, markerfacecolor="none", label=f"{r} %")
                for r, col in colours.items()]
    handles += [plt.Line2D([], [], marker="v", ls="", color="red", label="resolvably below random")]
    handles += [plt.Line2D([], [], color="tab:green", ls=":", label="headroom: full − random")]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
