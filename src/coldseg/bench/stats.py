"""Summaries of a benchmark: mean ± std over seeds, and paired differences to random.

Seeds pair runs: seed s of strategy A and seed s of random share the pool/test split and the
training seed, so A − random is compared seed by seed (a paired design), and the interval is a
Student-t interval over those per-seed differences.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

from coldseg.bench.results import FULL, norm_ratio, rows_by

METRICS = ("dice", "hd95")
BASELINE = "random"


@dataclass
class Summary:
    strategy: str
    ratio: float
    n_labeled: int
    metric: str
    mean: float
    std: float        # sample std (ddof=1); nan for a single seed
    n: int            # finite values averaged
    n_runs: int       # runs including non-finite values


@dataclass
class PairedDiff:
    strategy: str
    ratio: float
    metric: str
    mean: float       # mean of (strategy − baseline) over matched seeds
    lo: float         # 95% t-interval; nan with fewer than 2 matched seeds
    hi: float
    n: int            # matched seeds with finite values on both sides
    seeds: list[int]


def mean_std(values: Iterable[float]) -> tuple[float, float, int]:
    """(mean, sample std, count) over the finite values; nan where undefined."""
    v = np.asarray([x for x in values if math.isfinite(x)], dtype=np.float64)  # (k,)
    if v.size == 0:
        return math.nan, math.nan, 0
    std = float(v.std(ddof=1)) if v.size > 1 else math.nan
    return float(v.mean()), std, int(v.size)


def t_interval(diffs: Iterable[float], confidence: float = 0.95) -> tuple[float, float, float, int]:
    """Mean and two-sided Student-t interval of paired differences: d̄ ± t_{1−α/2, n−1} · s/√n.

    Returns (mean, lo, hi, n); lo = hi = nan when n < 2 (no spread to estimate).
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence} must lie in (0, 1)")
    d = np.asarray(list(diffs), dtype=np.float64)  # (n,)
    n = int(d.size)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    mean = float(d.mean())
    if n < 2:
        return mean, math.nan, math.nan, n
    from scipy.stats import t  # scipy ships with scikit-learn

    half = float(t.ppf(0.5 + confidence / 2, n - 1)) * float(d.std(ddof=1)) / math.sqrt(n)
    return mean, mean - half, mean + half, n


def summarize(rows: list[dict[str, Any]]) -> list[Summary]:
    """Per (strategy, ratio, metric): mean ± std over seeds, sorted by strategy then ratio."""
    out = []
    for (strategy, ratio), group in sorted(rows_by(rows, "strategy", "ratio").items(), key=_order):
        n_lab = int(round(np.median([r["n_labeled"] for r in group])))
        for m in METRICS:
            mean, std, n = mean_std(r[m] for r in group)
            out.append(Summary(strategy, ratio, n_lab, m, mean, std, n, len(group)))
    return out


def paired_differences(rows: list[dict[str, Any]], baseline: str = BASELINE,
                       confidence: float = 0.95) -> list[PairedDiff]:
    """For every strategy other than ``baseline`` and the upper bound, at every ratio the baseline
    also ran: the paired difference over the seeds both ran (non-finite values drop that seed)."""
    cell = {(r["strategy"], r["ratio"], r["seed"]): r for r in rows}
    out = []
    strategies = sorted({r["strategy"] for r in rows} - {baseline, FULL}, key=strategy_order)
    ratios = sorted({r["ratio"] for r in rows if r["strategy"] == baseline})
    for s in strategies:
        for ratio in ratios:
            seeds = sorted(seed for (st, ra, seed) in cell if st == s and ra == ratio
                           and (baseline, ratio, seed) in cell)
            if not seeds:
                continue
            for m in METRICS:
                pairs = [(seed, cell[(s, ratio, seed)][m] - cell[(baseline, ratio, seed)][m]) for seed in seeds]
                pairs = [(seed, d) for seed, d in pairs if math.isfinite(d)]
                mean, lo, hi, n = t_interval([d for _, d in pairs], confidence)
                out.append(PairedDiff(s, ratio, m, mean, lo, hi, n, [seed for seed, _ in pairs]))
    return out


def full_minus_baseline(rows: list[dict[str, Any]], metric: str = "dice",
                        baseline: str = BASELINE) -> dict[tuple[float, int], float]:
    """{(ratio, seed): full-label ``metric`` of seed s minus ``baseline``'s at that ratio and seed}, for
    every ratio the baseline ran; seeds without a full-label run and non-finite values are left out."""
    full = {r["seed"]: r[metric] for r in rows if r["strategy"] == FULL}
    out = {}
    for r in rows:
        if r["strategy"] == baseline and r["seed"] in full:
            d = full[r["seed"]] - r[metric]
            if math.isfinite(d):
                out[(r["ratio"], r["seed"])] = d
    return out


def headroom_differences(rows: list[dict[str, Any]], baseline: str = BASELINE,
                         confidence: float = 0.95) -> list[PairedDiff]:
    """The full-label runs against ``baseline`` at every ratio, paired on seed (strategy ``FULL``):
    the gain a strategy would show if it reached full-label quality there, so a strategy's paired
    difference reads against it."""
    by_metric = {m: full_minus_baseline(rows, m, baseline) for m in METRICS}
    out = []
    for ratio in sorted({ra for d in by_metric.values() for ra, _ in d}):
        for m, diffs in by_metric.items():
            pairs = sorted((seed, d) for (ra, seed), d in diffs.items() if ra == ratio)
            mean, lo, hi, n = t_interval([d for _, d in pairs], confidence)
            out.append(PairedDiff(FULL, ratio, m, mean, lo, hi, n, [seed for seed, _ in pairs]))
    return out


def strategy_order(name: str) -> tuple[int, str]:
    """random first, the upper bound last, the rest alphabetical."""
    return (0 if name == BASELINE else 2 if name == FULL else 1, name)


def _order(item: tuple[tuple[str, float], Any]) -> tuple:
    (strategy, ratio), _ = item
    return (*strategy_order(strategy), ratio)


@dataclass
class DrawSpread:
    """How much the choice of a pick set moves a metric, against training noise: a two-way table of
    ``J`` fixed draws × ``S`` training seeds, one value per run, split by the additive model
    y_js = μ + a_j + b_s + e_js (draw effect a, seed effect b, residual e)."""

    n_draws: int
    n_seeds: int
    mean: float
    sd_draw: float          # sqrt of the draw variance component, (MS_draw − MS_res)/S floored at 0
    sd_draw_lo: float       # 95 % percentile interval over draws resampled with replacement
    sd_draw_hi: float
    sd_train: float         # sqrt(MS_res): one training's noise around its set's and seed's means
    p_draw: float           # F test of "no draw effect" (MS_draw / MS_res)
    seed_means: np.ndarray  # (S,) the mean over draws at each seed, to pair another strategy's runs on


def _draw_components(Y: np.ndarray) -> tuple[float, float, float, float]:
    """(sd_draw, sd_train, F, grand mean) of a complete (J, S) table."""
    J, S = Y.shape
    m = Y.mean()
    rows = Y.mean(axis=1, keepdims=True)  # (J, 1)
    cols = Y.mean(axis=0, keepdims=True)  # (1, S)
    ms_draw = S * float(((rows - m) ** 2).sum()) / (J - 1)
    ms_res = float(((Y - rows - cols + m) ** 2).sum()) / ((J - 1) * (S - 1))
    var_draw = max(0.0, (ms_draw - ms_res) / S)
    f = ms_draw / ms_res if ms_res > 0 else math.inf
    return math.sqrt(var_draw), math.sqrt(ms_res), f, float(m)


def draw_spread(table: np.ndarray, n_boot: int = 2000, seed: int = 0) -> DrawSpread:
    """Variance components of ``table`` (J draws × S seeds, finite, J >= 2 and S >= 2): see
    :class:`DrawSpread`. The interval resamples whole draws (rows) ``n_boot`` times, so it reflects how
    few draws there are; with J = 8 it is wide, and it says so rather than hiding it."""
    Y = np.asarray(table, dtype=np.float64)
    if Y.ndim != 2 or Y.shape[0] < 2 or Y.shape[1] < 2 or not np.isfinite(Y).all():
        raise ValueError(f"draw_spread needs a finite table of at least 2 draws × 2 seeds, got shape {Y.shape}")
    from scipy.stats import f as f_dist

    J, S = Y.shape
    sd_draw, sd_train, F, m = _draw_components(Y)
    rng = np.random.default_rng(seed)
    boot = np.array([_draw_components(Y[rng.integers(0, J, J)])[0] for _ in range(n_boot)])  # (n_boot,)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    p = float(f_dist.sf(F, J - 1, (J - 1) * (S - 1))) if math.isfinite(F) else 0.0
    return DrawSpread(J, S, m, sd_draw, float(lo), float(hi), sd_train, p, Y.mean(axis=0))


# ---- how often issue 4's check passes or fails a selector of a given true gain ------------------------
# The check (coldseg.bench.target) reads n per-seed paired differences d_s (strategy − random, Dice
# points): the gain passes when their mean is >= the target, and a ratio fails "never below" when its
# two-sided 95 % t-interval lies entirely below 0. With d_s ~ Normal(g, sd) both are closed forms, so
# a folder's measured sd says how often the check gives each verdict to a selector whose true gain is g.

def pass_probability(true_gain: float, target: float, sd: float, n: int) -> float:
    """P(mean of n Normal(true_gain, sd) differences >= target): the chance the gain check passes."""
    if n < 1 or not sd > 0:
        raise ValueError(f"pass_probability needs n >= 1 and sd > 0, got n={n}, sd={sd}")
    from scipy.stats import norm

    return float(norm.sf((target - true_gain) * math.sqrt(n) / sd))


def below_probability(true_gain: float, sd: float, n: int, confidence: float = 0.95) -> float:
    """P(the two-sided ``confidence`` t-interval of n Normal(true_gain, sd) differences lies entirely
    below 0) = P(T <= −t_crit) for T non-central t (n − 1 df, non-centrality true_gain·√n/sd). At
    true_gain = 0 it is (1 − confidence)/2 whatever sd and n: 2.5 % for a 95 % interval."""
    if n < 2 or not sd > 0:
        raise ValueError(f"below_probability needs n >= 2 and sd > 0, got n={n}, sd={sd}")
    from scipy.stats import chi2, norm, t

    df = n - 1
    crit = float(t.ppf(0.5 + confidence / 2, df))
    nc = true_gain * math.sqrt(n) / sd
    # T = (Z + nc) / sqrt(V / df), V ~ chi2(df): P(T <= -crit) = E_V[Phi(-crit sqrt(V / df) - nc)], taken
    # on 4000 quantiles of V (scipy's nct.cdf returns nan far in the tail, where this stays exact to ~1e-4)
    v = chi2.ppf((np.arange(4000) + 0.5) / 4000, df)  # (4000,)
    return float(norm.cdf(-crit * np.sqrt(v / df) - nc).mean())


def seeds_needed(true_gain: float, target: float, sd: float, power: float = 0.8,
                 limit: int = 10_000) -> int | None:
    """The fewest seeds n with pass_probability(true_gain, target, sd, n) >= power; None when no n up
    to ``limit`` reaches it (a true gain at or below the target passes at most half the time)."""
    if not 0 < power < 1:
        raise ValueError(f"power={power} must lie in (0, 1)")
    if true_gain <= target:
        return 1 if power <= pass_probability(true_gain, target, sd, 1) else None
    from scipy.stats import norm

    n = max(1, math.ceil((float(norm.ppf(power)) * sd / (true_gain - target)) ** 2))
    return n if n <= limit else None


#: a fixed random draw's strategy name, ``random[draw=j]``
DRAW = re.compile(r"^random\[draw=(\d+)\]$")
#: the key of the mean-over-ratios table in draw_tables' result
MEAN = "mean"


def draw_tables(rows: list[dict], metric: str = "dice") -> tuple[dict, list[int], list[int]]:
    """{ratio or MEAN: (J, S) table ×100} over the draws and seeds complete at every ratio, the
    draws and the seeds used."""
    cell = {}
    for r in rows:
        m = DRAW.match(r["strategy"])
        if m and math.isfinite(r[metric]):
            cell[(norm_ratio(r["ratio"]), int(m.group(1)), int(r["seed"]))] = 100.0 * r[metric]
    ratios = sorted({k[0] for k in cell})
    all_draws = sorted({k[1] for k in cell})
    all_seeds = sorted({k[2] for k in cell})

    def complete(draws, seeds):
        return all((q, j, s) in cell for q in ratios for j in draws for s in seeds)

    # the larger complete table: every seed on the draws that have them all (a sweep still running),
    # or every draw on the seeds they all have
    a = ([j for j in all_draws if complete([j], all_seeds)], all_seeds)
    b = (all_draws, [s for s in all_seeds if complete(all_draws, [s])])
    draws, seeds = max(a, b, key=lambda t: len(t[0]) * len(t[1]))
    if len(draws) < 2 or len(seeds) < 2:
        raise ValueError(f"need >= 2 draws × 2 seeds complete at every ratio, have {len(draws)} "
                         f"draws on {len(seeds)} seeds; run `coldseg benchmark ... --strategies "
                         "random[draw=1],random[draw=2],...` on that folder")
    tables = {q: np.array([[cell[(q, j, s)] for s in seeds] for j in draws]) for q in ratios}
    tables[MEAN] = np.mean([tables[q] for q in ratios], axis=0)
    return tables, draws, seeds
