"""The figures of a selection report: feature map, silhouette curve, thumbnails of the picks.

Each ``plot_*`` function writes one PNG and returns plain facts for its caption. The projection is
kept apart (:func:`project_2d`) so that it can be tested, and reused, without drawing.
"""
from __future__ import annotations

import inspect
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window; must precede the pyplot import
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from PIL import Image  # noqa: E402

DPI = 110
GREY = (0.62, 0.62, 0.62, 1.0)
TSNE_ITERATIONS = 750
TSNE_ANGLE = 0.6
MAX_LEGEND = 30  # more clusters than this: the legend lists the largest ones


@dataclass
class Projection:
    coords: np.ndarray   # (m, 2) map position of each shown row
    shown: np.ndarray    # (m,) int64 pool index of each row of coords (all of 0..n-1 unless subsampled)
    method: str          # "t-SNE" or "PCA"
    pca_dims: int | None  # features were first reduced to this many PCA components (None: not reduced)
    subsampled: bool      # True when only part of the pool is drawn
    n_pool: int           # rows of the feature matrix


def project_2d(X: np.ndarray, picks: np.ndarray, *, max_points: int = 3000, seed: int = 0) -> Projection:
    """2-D map of the rows of ``X`` (n, d), as in Fig. 1c of Jin et al. 2022.

    n < 5: PCA only. n <= max_points: t-SNE (init="pca", random_state=seed) on all rows. Larger pools:
    PCA to 50 dimensions, then t-SNE on ``max_points`` rows drawn with ``seed`` that always include
    ``picks`` (when the picks alone exceed ``max_points``, a draw of ``max_points`` picks).
    """
    X = np.asarray(X, dtype=np.float64)
    n = X.shape[0]
    if n < 5:
        return Projection(_pca_2d(X), np.arange(n, dtype=np.int64), "PCA", None, False, n)
    shown = np.arange(n, dtype=np.int64)
    pca_dims = None
    if n > max_points:
        rng = np.random.default_rng(seed)
        picks = np.unique(np.asarray(picks, dtype=np.int64))
        if len(picks) >= max_points:
            shown = np.sort(rng.choice(picks, max_points, replace=False))
        else:
            rest = np.setdiff1d(np.arange(n), picks)
            shown = np.sort(np.concatenate([picks, rng.choice(rest, max_points - len(picks), replace=False)]))
        if X.shape[1] > 50:
            from sklearn.decomposition import PCA

            X = PCA(n_components=50, random_state=seed).fit_transform(X)  # (n, 50), fitted on the whole pool
            pca_dims = 50
        X = X[shown]
    return Projection(_tsne(X, seed), shown, "t-SNE", pca_dims, n > max_points, n)


def _pca_2d(X: np.ndarray) -> np.ndarray:
    """First two principal coordinates (n, 2); zero-padded when the data span fewer dimensions."""
    Xc = X - X.mean(axis=0)
    _, _, vt = np.linalg.svd(Xc, full_matrices=False)  # vt (r, d)
    Y = Xc @ vt[:2].T                                   # (n, <=2)
    return np.pad(Y, ((0, 0), (0, 2 - Y.shape[1])))


def _tsne(X: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.manifold import TSNE

    n = X.shape[0]
    if np.ptp(X, axis=0).max() == 0:
        warnings.warn(f"all {n} feature rows are identical; the map puts every image at one point", stacklevel=3)
        return np.zeros((n, 2))
    iters = "max_iter" if "max_iter" in inspect.signature(TSNE).parameters else "n_iter"  # sklearn < 1.5
    # 750 iterations and angle 0.6 (sklearn: 1000, 0.5) cost ~35% less CPU for the same picture at this scale
    tsne = TSNE(n_components=2, init="pca", random_state=seed, perplexity=min(30.0, (n - 1) / 3),
                learning_rate="auto", angle=TSNE_ANGLE, **{iters: TSNE_ITERATIONS})
    # OpenMP threads spin while they wait: with every core busy (a shared 2-core box) two threads ran
    # t-SNE 4x slower than one. Use half the cores this process may run on.
    from threadpoolctl import threadpool_limits

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2)
    with threadpool_limits(limits=max(1, cores // 2), user_api="openmp"):
        return tsne.fit_transform(X)  # (n, 2)


def palette(cluster_ids) -> dict[int, tuple]:
    """One colour per cluster id (-1, "no cluster", is grey), the same in every figure."""
    ids = sorted({int(c) for c in cluster_ids} - {-1})
    k = len(ids)
    if k <= 10:
        cols = [plt.get_cmap("tab10")(i) for i in range(k)]
    elif k <= 20:
        cols = [plt.get_cmap("tab20")(i) for i in range(k)]
    else:
        cols = [plt.get_cmap("turbo")(x) for x in np.linspace(0.03, 0.97, k)]
    out = dict(zip(ids, cols))
    out[-1] = GREY
    return out


def plot_map(path: Path, proj: Projection, labels: np.ndarray | None, picks: np.ndarray,
             pick_clusters: np.ndarray, colours: dict[int, tuple]) -> dict:
    """Pool images as dots coloured by cluster, picks as black-edged stars. Returns legend facts."""
    m = len(proj.shown)
    lab = np.full(m, -1, np.int64) if labels is None else np.asarray(labels)[proj.shown]
    pos = {int(i): r for r, i in enumerate(proj.shown)}
    rows = np.array([pos[int(p)] for p in picks if int(p) in pos], dtype=np.int64)
    pc = np.array([int(c) for p, c in zip(picks, pick_clusters) if int(p) in pos], dtype=np.int64)

    fig, ax = plt.subplots(figsize=(9.0, 6.6), dpi=DPI)
    dot = float(np.clip(24000 / max(m, 1), 3, 30))
    ax.scatter(proj.coords[:, 0], proj.coords[:, 1], s=dot, c=[colours.get(int(c), GREY) for c in lab],
               alpha=0.55, linewidths=0, rasterized=True)
    star = float(np.clip(15000 / max(len(rows), 1), 28, 150))
    if len(rows):
        ax.scatter(proj.coords[rows, 0], proj.coords[rows, 1], s=star, marker="*",
                   c=[colours.get(int(c), GREY) for c in pc], edgecolors="black", linewidths=0.7, zorder=3)
    ids, sizes = np.unique(lab, return_counts=True)
    order = np.argsort(-sizes, kind="stable")[:MAX_LEGEND] if len(ids) > MAX_LEGEND else np.arange(len(ids))
    handles = [Line2D([], [], ls="", marker="o", ms=7, color=colours.get(int(ids[i]), GREY),
                      label="pool" if ids[i] == -1 else f"{ids[i]} (n={sizes[i]})") for i in sorted(order)]
    handles.append(Line2D([], [], ls="", marker="*", ms=12, mfc="white", mec="black", label=f"picks ({len(rows)})"))
    title = "cluster" if labels is not None else None
    if len(ids) > MAX_LEGEND:
        title = f"cluster ({MAX_LEGEND} largest of {len(ids)})"
    ax.legend(handles=handles, title=title, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False,
              fontsize=8, ncol=1 if len(handles) <= 24 else 2, borderaxespad=0.0)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel(f"{proj.method} 1")
    ax.set_ylabel(f"{proj.method} 2")
    drawn = f"{m} of {proj.n_pool} images (random subsample)" if proj.subsampled else f"{m} images"
    ax.set_title(f"{proj.method} map of the features: {drawn}, {len(rows)} picks", fontsize=11)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return {"points": m, "picks_shown": len(rows), "clusters": int((ids >= 0).sum()),
            "legend_capped": len(ids) > MAX_LEGEND}


def plot_silhouette(path: Path, scores: dict, k: int | None) -> dict:
    """Silhouette coefficient against K; the chosen K ringed in red. ``scores`` maps str(K) -> float."""
    pts = sorted((int(kk), float(v)) for kk, v in scores.items() if v is not None)
    ks = np.array([p[0] for p in pts])
    vs = np.array([p[1] for p in pts])
    fig, ax = plt.subplots(figsize=(6.4, 3.9), dpi=DPI)
    ax.plot(ks, vs, "-o", color="#3465a4", ms=4, lw=1.4)
    chosen = k is not None and int(k) in set(ks.tolist())
    if chosen:
        v = vs[ks.tolist().index(int(k))]
        ax.axvline(int(k), color="#cc0000", ls=":", lw=1)
        ax.plot([int(k)], [v], "o", ms=12, mfc="none", mec="#cc0000", mew=2)
        ax.set_title(f"chosen K = {int(k)} (silhouette {v:.3f}), ringed", fontsize=10, color="#cc0000")
    elif k is not None:
        ax.set_title(f"chosen K = {k} is not in the sweep", fontsize=10)
    ax.set_xlabel("K (number of clusters)")
    ax.set_ylabel("silhouette coefficient")
    ax.set_xticks(ks if len(ks) <= 25 else ks[:: int(np.ceil(len(ks) / 25))])
    ax.grid(alpha=0.3)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return {"k_values": ks.tolist(), "chosen_in_sweep": chosen}


def plot_picks(path: Path, images: np.ndarray, picks: np.ndarray, pick_clusters: np.ndarray,
               labels: np.ndarray | None, colours: dict[int, tuple], *, cap: int = 200,
               thumb: int = 64, cols: int = 14) -> dict:
    """Thumbnails of the first ``cap`` picks (by rank), one block of rows per cluster, rank on each.

    With more than 30 clusters among the shown picks, one grid sorted by cluster instead (each thumbnail
    then carries its cluster id). Returns {"shown", "total", "capped", "grouped"}.
    """
    total = len(picks)
    n_show = min(cap, total)
    rank = np.arange(1, n_show + 1)
    pidx = np.asarray(picks[:n_show], dtype=np.int64)
    pick_clusters = np.asarray(pick_clusters, dtype=np.int64)
    pcl = pick_clusters[:n_show]
    cids = sorted(set(pcl.tolist()))
    grouped = len(cids) <= 30
    groups = [np.flatnonzero(pcl == c) for c in cids] if grouped else [np.lexsort((rank, pcl))]
    gap, label_w, top = 4, (150 if grouped else 0), 30
    cell = thumb + gap
    n_rows = [int(np.ceil(len(g) / cols)) for g in groups]
    W = label_w + cols * cell + gap
    H = top + sum(r * cell + 2 * gap for r in n_rows) + gap
    canvas = np.full((H, W, 3), 255, np.uint8)
    texts = []  # (x, y, text, kwargs)
    y0 = top
    sizes = None if labels is None else dict(zip(*np.unique(labels, return_counts=True)))
    for g, r in zip(groups, n_rows):
        if grouped:
            c = int(pcl[g[0]])
            name = "no clusters" if c == -1 else f"cluster {c}"
            size = "" if sizes is None or c == -1 else f"\n{sizes.get(c, 0)} images"
            n_all = int((pick_clusters == c).sum())  # picks of this cluster, shown or not
            count = f"{n_all} pick{'s' * (n_all != 1)}" + (f"\n({len(g)} shown)" if len(g) < n_all else "")
            texts.append((8, y0 + gap + 2, f"{name}{size}\n{count}",
                          {"fontsize": 9, "va": "top", "color": _dark(colours.get(c, GREY)), "weight": "bold"}))
        for j, i in enumerate(g):
            x = label_w + gap + (j % cols) * cell
            y = y0 + gap + (j // cols) * cell
            col = (np.array(colours.get(int(pcl[i]), GREY)[:3]) * 255).astype(np.uint8)
            canvas[y - 2 : y + thumb + 2, x - 2 : x + thumb + 2] = col  # 2-px frame in the cluster colour
            canvas[y : y + thumb, x : x + thumb] = _thumbnail(images[pidx[i]], thumb)
            tag = f"#{rank[i]}" if grouped else f"#{rank[i]} c{pcl[i]}"
            texts.append((x + 1, y + 1, tag, {"fontsize": 6.5, "va": "top", "color": "white",
                                              "bbox": {"fc": "black", "alpha": 0.6, "pad": 0.8, "lw": 0}}))
        y0 += r * cell + 2 * gap
        canvas[y0 - 1, 4 : W - 4] = 200  # separator between clusters
    fig = plt.figure(figsize=(W / DPI, H / DPI), dpi=DPI)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(canvas, interpolation="nearest")
    ax.set_axis_off()
    head = f"picks by cluster, rank on each thumbnail ({n_show} of {total} picks" + (
        ", the first by rank)" if n_show < total else ")")
    ax.text(8, 8, head, fontsize=10, va="top")
    for x, y, s, kw in texts:
        ax.text(x, y, s, **kw)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return {"shown": n_show, "total": total, "capped": n_show < total, "grouped": grouped}


def _thumbnail(img: np.ndarray, size: int) -> np.ndarray:
    """(3, S, S) uint8 -> (size, size, 3) uint8; grayscale pools (3 equal channels) stay grey."""
    im = Image.fromarray(np.ascontiguousarray(np.transpose(img, (1, 2, 0))))
    up = im.width < size and im.height < size
    return np.asarray(im.resize((size, size), Image.Resampling.NEAREST if up else Image.Resampling.LANCZOS))


def _dark(rgba: tuple) -> tuple:
    """A darker shade of a palette colour, readable as text on white."""
    return tuple(0.7 * np.asarray(rgba[:3]))
