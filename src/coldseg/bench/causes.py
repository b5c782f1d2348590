"""What about a picked set predicts the Dice it trains to? Read off a benchmark folder.

Every row of ``runs.jsonl`` names the images a run trained on (``ids``). For each run this module
measures the picked set, then asks which measure moves with Dice once the ratio and the seed are held
fixed: runs are grouped by (ratio, seed), which share the budget, the U-Net seed and the encoder, and
both Dice and the measure are centred inside each group, so only differences between strategies on
the same footing are correlated (a paired, fixed-effects reading). The 95 % interval is a bootstrap
over runs.

Label-free measures (a selector could optimise them), on the run's own encoder features
(``features/<kind>-seed<N + s % F>.npy``, N the folder's ``feature_seed_offset``), rows unit-normalised:
  cover    mean distance from every pool row to its nearest pick (lower: better covered)
  density  mean percentile of the picks' typicality (0.5 for a uniform draw)
  mmd      maximum mean discrepancy, Gaussian kernel, median bandwidth, picks vs the pool

Label-based measures (a selector cannot see them; they say what the selection should have
controlled), from the masks:
  fg       mean foreground fraction of the picked masks
  small    share of picks whose foreground covers < 5 % of the image

Image measures (label-free, from pixels): ``contrast``, the mean per-image standard deviation.

How much of a mask measure the features carry at all: :func:`encoded_r2`, the cross-validated R^2 of
a ridge regression of each image's foreground fraction on its unit-normalised features. Near 0, no
selector working on these features can steer the picks' foreground sizes, whatever its rule.

Use it on validation folders to find causes; reading test folders this way is reading test scores.
"""
from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from coldseg.bench import results as R

SMALL_FOREGROUND = 0.05
FEATURE_STATS = ("cover", "density", "mmd")
STATS = (*FEATURE_STATS, "fg", "small", "contrast")
LABEL_BASED = ("fg", "small")


@dataclass
class Correlation:
    stat: str
    ratio: float | None          # None: all ratios pooled
    r: float
    low: float
    high: float
    n: int


def centred_within(rows: Sequence[dict[str, Any]], keys: Sequence[str],
                   by: Sequence[str] = ("ratio", "seed")) -> dict[str, np.ndarray]:
    """Each of ``keys`` minus its mean inside the group of rows sharing ``by``; groups of one dropped.

    Returns key -> (m,) array in a fixed row order, plus ``"ratio"`` and ``"row"`` (the position in
    ``rows``) for each kept row.
    """
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        groups[tuple(row[b] for b in by)].append(i)
    out: dict[str, list[float]] = {k: [] for k in (*keys, "ratio", "row")}
    for group in groups.values():
        if len(group) < 2:
            continue
        for k in keys:
            v = np.array([float(rows[i][k]) for i in group])
            out[k].extend(v - v.mean())
        out["ratio"].extend(float(rows[i]["ratio"]) for i in group)
        out["row"].extend(group)
    return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}


def correlation(x: np.ndarray, y: np.ndarray, *, boot: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """Pearson r of x and y (n,) and a percentile-bootstrap 95 % interval; nan when either is constant."""
    def r_of(a: np.ndarray, b: np.ndarray) -> float:
        sa, sb = a.std(), b.std()
        return float(((a - a.mean()) * (b - b.mean())).mean() / (sa * sb)) if sa > 0 and sb > 0 else float("nan")

    if len(x) < 2:                                     # no runs with this measure (no features)
        return (float("nan"),) * 3
    r = r_of(x, y)
    if not np.isfinite(r) or len(x) < 3:
        return r, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    draws = [r_of(x[i], y[i]) for i in (rng.integers(0, len(x), len(x)) for _ in range(boot))]
    draws = [d for d in draws if np.isfinite(d)]
    low, high = np.percentile(draws, [2.5, 97.5]) if draws else (float("nan"),) * 2
    return r, float(low), float(high)


def correlations(rows: Sequence[dict[str, Any]], stats: Sequence[str], *, boot: int = 1000
                 ) -> list[Correlation]:
    """For each stat: the within-(ratio, seed) correlation with Dice, all ratios pooled and per ratio,
    over the runs where the stat is known (a feature measure is nan where the features were absent)."""
    out = []
    ratios = sorted({float(r["ratio"]) for r in rows})
    for stat in stats:
        c = centred_within([r for r in rows if np.isfinite(r[stat])], (stat, "dice"))
        for ratio in (None, *ratios):
            m = np.ones(len(c["dice"]), bool) if ratio is None else c["ratio"] == ratio
            r, low, high = correlation(c[stat][m], c["dice"][m], boot=boot)
            out.append(Correlation(stat, ratio, r, low, high, int(m.sum())))
    return out


# ----------------------------------------------------------------------------- measures of a set
def unit(X: np.ndarray) -> np.ndarray:
    from coldseg.select.herding import unit_rows

    return unit_rows(np.asarray(X, dtype=np.float64))


class FeatureMeasures:
    """Label-free measures of pick sets on one encoder's pool features (rows = pool order)."""

    def __init__(self, X: np.ndarray, k: int = 20):
        from coldseg.select.herding import mean_kernel, median_bandwidth
        from coldseg.select.typiclust import typicality

        self.Z = unit(X)                                              # (n, d)
        typ = typicality(self.Z, k)
        self.rank = typ.argsort().argsort() / max(len(typ) - 1, 1)    # (n,) density percentile
        self.h = median_bandwidth(self.Z, np.random.default_rng(0))
        self.mu = mean_kernel(self.Z, self.Z, self.h)                 # (n,) chunked, no n x n matrix

    def __call__(self, picks: np.ndarray) -> dict[str, float]:
        from coldseg.select.herding import mmd2
        from coldseg.select.kmeans import _assign_numpy

        P = self.Z[picks]
        cover = float(np.linalg.norm(self.Z - P[_assign_numpy(self.Z, P)], axis=1).mean())
        return {"cover": cover, "density": float(self.rank[picks].mean()),
                "mmd": float(np.sqrt(max(mmd2(self.Z, picks, self.h, self.mu), 0.0)))}


def mask_measures(fg: np.ndarray, picks: np.ndarray) -> dict[str, float]:
    """``fg`` (n,) foreground fraction of every pool mask -> the label-based measures of ``picks``."""
    f = fg[picks]
    return {"fg": float(f.mean()), "small": float((f < SMALL_FOREGROUND).mean())}


def measure_runs(runs: Sequence[dict[str, Any]], pool_ids: Sequence[str], features_of: Callable[[int], np.ndarray],
                 fg: np.ndarray, contrast: np.ndarray) -> list[dict[str, Any]]:
    """One row per non-full run: strategy, ratio, seed, dice and every measure of its picked set.

    ``features_of(seed)`` gives the pool features the run selected from (rows in ``pool_ids`` order), or
    None where they are not at hand: that run's ``FEATURE_STATS`` are then nan.
    """
    pos = {i: j for j, i in enumerate(pool_ids)}
    cache: dict[int, FeatureMeasures] = {}
    rows = []
    for run in runs:
        if run["strategy"] == R.FULL or float(run["ratio"]) >= 100.0:
            continue
        missing = [i for i in run["ids"] if i not in pos]
        if missing:
            raise ValueError(f"run {run['strategy']}/{run['ratio']}%/seed{run['seed']} trained on ids outside "
                             f"the pool ({missing[:3]}...): the folder's settings do not rebuild its split")
        picks = np.array([pos[i] for i in run["ids"]], dtype=np.int64)
        X = features_of(int(run["seed"]))
        if X is None:                      # features absent: the label-free feature measures are unknown
            measured = dict.fromkeys(FEATURE_STATS, float("nan"))
        else:
            key = id(X)
            if key not in cache:
                cache[key] = FeatureMeasures(X)
            measured = cache[key](picks)
        rows.append({"strategy": run["strategy"], "ratio": float(run["ratio"]), "seed": int(run["seed"]),
                     "dice": 100.0 * float(run["dice"]), **measured, **mask_measures(fg, picks),
                     "contrast": float(contrast[picks].mean())})
    return rows


def load_folder(folder: str | Path, data_dir: str | Path | None = None, *, missing_features: str = "error"
                ) -> tuple[list[dict[str, Any]], list[str], Callable[[int], np.ndarray | None], np.ndarray, np.ndarray]:
    """(runs, pool ids, features_of, fg, contrast) of a benchmark folder, its split rebuilt from settings.json.

    ``data_dir`` replaces the dataset path recorded in settings.json (a folder made on another machine).
    ``missing_features="skip"``: ``features_of`` gives None where the folder's feature file is absent (a
    folder of ``random`` runs only, or features/ not carried over), so only the label-based and image
    measures are read; the default raises, naming the file.
    """
    if missing_features not in ("error", "skip"):
        raise ValueError(f"missing_features={missing_features!r}: 'error' or 'skip'")
    from coldseg.bench.sweep import BenchmarkConfig, encoder_of, evaluation_split
    from coldseg.data.pairs import load_pairs

    folder = Path(folder)
    st = (R.read_settings(folder) or {}).get("settings")
    if not st or not (folder / "runs.jsonl").is_file():
        raise ValueError(f"{str(folder)!r} is not a benchmark folder (settings.json and runs.jsonl are needed)")
    data = Path(data_dir) if data_dir is not None else Path(st["dataset"])
    if not data.is_dir():
        raise ValueError(f"dataset {str(data)!r} (from {'--data' if data_dir else 'settings.json'}) is not a folder; "
                         "pass the dataset's folder on this machine")
    cfg = BenchmarkConfig(data, folder, [], [], [], image_size=st["image_size"],
                          test_fraction=st["test_fraction"], split_seed=st["split_seed"],
                          evaluate_on=st.get("evaluate_on", "test"))
    pairs = load_pairs(data, st["image_size"], progress=False, masks_dir=st.get("masks_dir", "masks"),
                       multiclass=st.get("multiclass", False))
    sha = hashlib.sha256("\n".join(pairs.ids).encode("utf-8", "surrogateescape")).hexdigest()[:16]
    if st.get("ids_sha256") not in (None, sha):
        raise ValueError(f"{str(data)!r} holds other images than the folder's benchmark ran on (ids_sha256 "
                         f"{sha} against {st['ids_sha256']}): its split cannot be rebuilt")
    pool_idx, _ = evaluation_split(cfg, pairs.ids, pairs.groups)
    fg = (pairs.masks[pool_idx] > 0).reshape(len(pool_idx), -1).mean(1)                  # (n,)
    contrast = (pairs.images[pool_idx].astype(np.float32) / 255.0).std(axis=(1, 2, 3))   # (n,)
    F, offset = st.get("feature_seeds"), st.get("feature_seed_offset", 0)
    kind = st.get("features", "moco")
    loaded: dict[int, np.ndarray] = {}

    def features_of(seed: int) -> np.ndarray | None:
        f = encoder_of(seed, F, offset)
        if f not in loaded:
            path = folder / "features" / f"{kind}-seed{f}.npy"
            if not path.is_file():
                if missing_features == "skip":
                    return None
                raise ValueError(f"{path} is missing: the folder's features are needed to measure its picks")
            loaded[f] = np.load(path)
        return loaded[f]

    runs = R.read_jsonl(folder / "runs.jsonl")
    return runs, [pairs.ids[i] for i in pool_idx], features_of, fg, contrast


def encoded_r2(X: np.ndarray, y: np.ndarray, *, folds: int = 5, seed: int = 0) -> float:
    """Cross-validated R^2 of y (n,) from the unit-normalised rows of X (n, d): ridge, alpha by inner CV."""
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import KFold, cross_val_predict

    y = np.asarray(y, dtype=np.float64)
    if y.std() == 0 or len(y) < 2 * folds:
        return float("nan")
    pred = cross_val_predict(RidgeCV(alphas=np.logspace(-3, 3, 13)), unit(X), y,
                             cv=KFold(folds, shuffle=True, random_state=seed))
    return float(1.0 - ((pred - y) ** 2).sum() / ((y - y.mean()) ** 2).sum())


def markdown(corrs: Sequence[Correlation]) -> str:
    ratios = sorted({c.ratio for c in corrs if c.ratio is not None})
    head = "| measure | all ratios | " + " | ".join(f"{r:g} %" for r in ratios) + " |"
    lines = [head, "|---|" + "---|" * (len(ratios) + 1)]
    by_stat: dict[str, dict[float | None, Correlation]] = defaultdict(dict)
    for c in corrs:
        by_stat[c.stat][c.ratio] = c
    for stat, cells in by_stat.items():
        name = f"{stat} (labels)" if stat in LABEL_BASED else stat
        row = [f"{c.r:+.2f} [{c.low:+.2f}, {c.high:+.2f}]" if c.n else "n/a (no features)"
               for c in (cells[k] for k in (None, *ratios))]
        lines.append(f"| {name} | " + " | ".join(row) + " |")
    n = max(c.n for c in corrs if c.ratio is None)
    lines.append(f"\nPearson r with Dice inside (ratio, seed) groups, {n} runs; [95 % bootstrap interval].")
    return "\n".join(lines)


def strategy_means(rows: Sequence[dict[str, Any]], stats: Sequence[str]) -> str:
    by: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by[row["strategy"]].append(row)
    lines = ["| strategy | runs | " + " | ".join(stats) + " | Dice |", "|---|---|" + "---|" * (len(stats) + 1)]
    for name in sorted(by):
        rs = by[name]
        lines.append(f"| `{name}` | {len(rs)} | " + " | ".join(f"{np.mean([r[s] for r in rs]):.3f}" for s in stats)
                     + f" | {np.mean([r['dice'] for r in rs]):.2f} |")
    return "\n".join(lines)


def to_json(corrs: Sequence[Correlation]) -> str:
    return json.dumps([c.__dict__ for c in corrs], indent=1)


def plot_causes(path: str | Path, panels: Sequence[tuple[str, Sequence[dict[str, Any]]]],
                stats: Sequence[str] = ("density", "mmd", "fg")) -> Path:
    """One row per (title, rows) panel, one column per measure: Dice against the measure, both centred
    inside (ratio, seed) groups, a dot per run coloured by strategy, the least-squares line and r."""
    from coldseg.report.plots import plt

    strategies = sorted({r["strategy"] for _, rows in panels for r in rows})
    colours = {s: plt.get_cmap("tab10")(i % 10) for i, s in enumerate(strategies)}
    fig, axes = plt.subplots(len(panels), len(stats), figsize=(3.2 * len(stats), 2.8 * len(panels)),
                             squeeze=False)
    for i, (title, rows) in enumerate(panels):
        for j, stat in enumerate(stats):
            ax = axes[i][j]
            kept = [r for r in rows if np.isfinite(r[stat])]     # a measure without features is nan
            c = centred_within(kept, (stat, "dice"))
            names = [kept[int(k)]["strategy"] for k in c["row"]]
            x, y = c[stat], c["dice"]
            ax.scatter(x, y, s=7, c=[colours[n] for n in names], alpha=0.7, linewidths=0)
            r, low, high = correlation(x, y, boot=200)
            if np.isfinite(r) and x.std() > 0:
                slope = float(np.polyfit(x, y, 1)[0])
                xs = np.array([x.min(), x.max()])
                ax.plot(xs, slope * xs, color="black", lw=1)
            label = f"{stat} (labels)" if stat in LABEL_BASED else stat
            ax.set_title(f"{title}\n{label}: r = {r:+.2f} [{low:+.2f}, {high:+.2f}]", fontsize=8)
            ax.axhline(0, color="grey", lw=0.5)
            ax.axvline(0, color="grey", lw=0.5)
            ax.tick_params(labelsize=7)
            if j == 0:
                ax.set_ylabel("Dice − group mean (points)", fontsize=8)
            ax.set_xlabel(f"{stat} − group mean", fontsize=8)
    handles = [plt.Line2D([], [], marker="o", ls="", color=colours[s], label=s) for s in strategies]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(strategies), 6), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
