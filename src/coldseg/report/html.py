"""The report of a selection run: one self-contained HTML page and the PNGs it shows.

:func:`write_report` reads the manifest tolerantly: a missing key drops its row, never the report.
Keys read (first one present wins; the layout of ``coldseg.api.select`` first):
  strategy  strategy | selection.strategy | selection.name     params   strategy_params | selection.params
  budget    budget | selection.budget (else the number of picks), budget_requested
  pool      pool.size | pool.n_images | pool.n (else len(ids)), pool.root, pool.grayscale
  seed      seed | selection.seed      image_size      features.source, features.dim
  K         selection.info.k           silhouette  selection.info.silhouette {str(K): score}
  (selection.info falls back to ``selection.info`` when the manifest has none)
  augmentation  augmentation.winner, .candidates {name: loss} (or features.augmentation)
  device    device | features.device | encoder.device      timings  timings | timing {stage: seconds}
  version, created     coldseg | version, created
  skipped / duplicates  pool.skipped [{id, reason}] / pool.duplicates [{id, same_as}]
Every id and manifest string is HTML-escaped; figures are referenced by relative file name.
"""
from __future__ import annotations

import json
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from coldseg.report.plots import palette, plot_map, plot_picks, plot_silhouette, project_2d
from coldseg.select.base import Selection, check_features

MAP_MAX_POINTS = 3000
PICKS_CAP = 200

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;max-width:1200px;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.2em;margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
th,td{border:1px solid #ddd;padding:3px 9px;text-align:left;vertical-align:top}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.win td{font-weight:bold;background:#fff6d6}code{word-break:break-all}
figure{margin:1em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.9em;color:#555;max-width:900px}.note{color:#666;font-style:italic}
.sw{display:inline-block;width:.8em;height:.8em;border:1px solid #555;vertical-align:middle}
"""


def write_report(out_dir: Path, *, ids: list[str], images: np.ndarray, features: np.ndarray,
                 selection: Selection, manifest: dict) -> list[str]:
    """Write report.html, map.png, silhouette.png (when a K sweep ran) and picks.png into ``out_dir``.

    images: (n, 3, S, S) uint8; features: (n, d); ``selection`` indexes both. Returns the file names.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ids, images, X, labels = _check_inputs(ids, images, features, selection)
    manifest = manifest if isinstance(manifest, dict) else {}
    picks = np.asarray(selection.indices, dtype=np.int64)
    clusters = np.asarray(selection.clusters, dtype=np.int64)
    if labels is not None:  # a pick without a strategy cluster takes its pool label
        clusters = np.where(clusters >= 0, clusters, labels[picks])
    colours = palette(np.concatenate([clusters, labels if labels is not None else []]).astype(np.int64))
    info = _dig(manifest, "selection", "info")
    info = info if isinstance(info, dict) else (selection.info or {})
    k = info.get("k")
    written = []

    proj = project_2d(X, picks, max_points=MAP_MAX_POINTS, seed=0)
    map_facts = plot_map(out_dir / "map.png", proj, labels, picks, clusters, colours)
    written.append("map.png")
    sil = info.get("silhouette")
    sil_ok = isinstance(sil, dict) and any(v is not None for v in sil.values())
    if sil_ok:
        sil_facts = plot_silhouette(out_dir / "silhouette.png", sil, k)
        written.append("silhouette.png")
    pick_facts = plot_picks(out_dir / "picks.png", images, picks, clusters, labels, colours, cap=PICKS_CAP)
    written.append("picks.png")

    strategy = _summary_value(manifest, "strategy")
    title = "coldseg selection report" + ("" if strategy is None else f": {_s(strategy)}")
    parts = [f"<h1>{escape(title)}</h1>"]
    parts.append("<h2>Summary</h2>" + _summary(manifest, info, len(ids), len(picks)))
    parts.append("<h2>Feature map</h2>" + _figure("map.png", "2-D map of the features", _map_caption(
        proj, map_facts, len(ids), labels is not None)))
    parts.append("<h2>Choice of K</h2>")
    if sil_ok:
        cap = f"Silhouette coefficient of k-means for each K tried; the chosen K = {k} is ringed in red."
        if not sil_facts["chosen_in_sweep"]:
            cap = f"Silhouette coefficient of k-means for each K tried; the chosen K = {k} is not in the sweep."
        if info.get("silhouette_sample_size"):
            cap += f" Scores estimated on {info['silhouette_sample_size']} images drawn at random."
        parts.append(_figure("silhouette.png", "silhouette coefficient against K", cap))
    else:
        parts.append('<p class="note">no K sweep for this strategy</p>')
    cap = ("Thumbnails of the picks, one block per cluster (cluster colour on the frame); #r is the pick rank."
           if pick_facts["grouped"] else
           "Thumbnails of the picks sorted by cluster (too many clusters for one row each); "
           "#r is the pick rank, c the cluster.")
    if pick_facts["capped"]:
        cap += f" Capped: the first {pick_facts['shown']} of {pick_facts['total']} picks by rank are shown."
    parts.append("<h2>Picks</h2>" + _figure("picks.png", "thumbnails of the picks", cap))
    parts.append(_picks_table(ids, picks, clusters, selection.distances, labels is not None, colours))
    parts.append(_pool_problems(manifest))
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{escape(title)}</title>"
            f"<style>{_CSS}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n")
    # ids come from file names: undecodable bytes (lone surrogates) are written as \udcXX, not a crash
    (out_dir / "report.html").write_text(page, encoding="utf-8", errors="backslashreplace")
    written.append("report.html")
    return written


def _check_inputs(ids, images, features, selection):
    ids = [str(i) for i in ids]
    n = len(ids)
    X = check_features(features)
    if X.shape[0] != n:
        raise ValueError(f"features have {X.shape[0]} rows but there are {n} ids; pass the features of the pool")
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[0] != n or images.shape[1] != 3:
        raise ValueError(f"images must have shape ({n}, 3, S, S); got {images.shape}")
    if images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 (0-255); got dtype {images.dtype}")
    idx = np.asarray(selection.indices)
    if idx.ndim != 1 or len(idx) == 0 or idx.min() < 0 or idx.max() >= n:
        raise ValueError(f"selection.indices must be a non-empty 1-D array of rows in [0, {n}); got {idx!r:.80}")
    if len(selection.clusters) != len(idx) or len(selection.distances) != len(idx):
        raise ValueError(f"selection has {len(idx)} indices but {len(selection.clusters)} clusters and "
                         f"{len(selection.distances)} distances; they must match")
    labels = None
    if selection.labels is not None:
        labels = np.asarray(selection.labels, dtype=np.int64)
        if labels.shape != (n,):
            raise ValueError(f"selection.labels must have shape ({n},); got {labels.shape}")
    return ids, images, X, labels


def _dig(d: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def _first(d: dict, *paths: tuple[str, ...]) -> Any:
    for p in paths:
        v = _dig(d, *p)
        if v is not None:
            return v
    return None


_PATHS: dict[str, list[tuple[str, ...]]] = {
    "strategy": [("strategy",), ("selection", "strategy"), ("selection", "name")],
    "params": [("strategy_params",), ("selection", "params")],
    "budget": [("budget",), ("selection", "budget")],
    "budget_requested": [("budget_requested",)],
    "pool": [("pool", "size"), ("pool", "n_images"), ("pool", "n")],
    "root": [("pool", "root")],
    "grayscale": [("pool", "grayscale")],
    "seed": [("seed",), ("selection", "seed")],
    "image_size": [("image_size",)],
    "features": [("features", "source")],
    "dim": [("features", "dim")],
    "device": [("device",), ("features", "device"), ("encoder", "device")],
    "timings": [("timings",), ("timing",)],
    "version": [("coldseg",), ("version",)],
    "created": [("created",)],
}


def _summary_value(m: dict, what: str) -> Any:
    return _first(m, *_PATHS[what])


def _s(v: Any) -> str:
    """A manifest value as short text (not yet escaped)."""
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (dict, list, tuple)):
        return json.dumps(v, ensure_ascii=False, default=str)
    return str(v)


def _row(name: str, value: Any) -> str:
    return f"<tr><th>{escape(name)}</th><td>{escape(_s(value))}</td></tr>"


def _summary(m: dict, info: dict, n_ids: int, n_picks: int) -> str:
    v = {key: _summary_value(m, key) for key in _PATHS}
    rows = []
    if v["strategy"] is not None:
        rows.append(_row("strategy", v["strategy"]))
    if v["params"]:
        rows.append(_row("parameters", v["params"]))
    budget = n_picks if v["budget"] is None else v["budget"]
    pool = n_ids if v["pool"] is None else v["pool"]
    text = _s(budget)
    if _is_num(budget) and _is_num(pool) and float(pool) > 0:
        text += f" ({100 * float(budget) / float(pool):.1f}% of the pool"
        asked = v["budget_requested"]
        text += f"; asked for {_s(asked)})" if asked is not None and _s(asked) != _s(budget) else ")"
    rows.append(_row("budget", text))
    rows.append(_row("pool size", pool))
    for label, key in (("images folder", "root"), ("grayscale pool", "grayscale"), ("seed", "seed"),
                       ("image size", "image_size")):
        if v[key] is not None:
            rows.append(_row(label, v[key]))
    if info.get("k") is not None:
        rows.append(_row("K (clusters)", info["k"]))
    if v["features"] is not None:
        rows.append(_row("features", f"{_s(v['features'])}" + (f", {_s(v['dim'])}-d" if v["dim"] else "")))
    aug = m.get("augmentation")
    aug = aug if isinstance(aug, dict) else _dig(m, "features", "augmentation")
    winner = aug.get("winner") if isinstance(aug, dict) else None
    if winner is not None:
        rows.append(_row("augmentation winner (eq. 7, hardest)", winner))
    check = _dig(m, "features", "feature_check")
    if isinstance(check, dict) and _is_num(check.get("view_top1")):
        rows.append(_row("feature check (label-free)",
                         f"augmented view finds its twin {100 * check['view_top1']:.1f} % of the time "
                         f"(chance {100 * check.get('chance_top1', 0):.1f} %); "
                         f"{100 * check.get('knn_overlap', 0):.1f} % of 10-NN survive augmentation "
                         f"(chance {100 * check.get('chance_knn_overlap', 0):.1f} %)" + _untrained(check)))
    if v["device"] is not None:
        rows.append(_row("device", v["device"]))
    timings = v["timings"]
    if isinstance(timings, dict):
        for stage, sec in timings.items():  # {"features_s": 12.3} -> "time: features", "12.3 s"
            name = str(stage).removesuffix("_s").replace("_", " ")
            rows.append(_row(f"time: {name}", f"{sec:.1f} s" if _is_num(sec) else sec))
    elif timings is not None:
        rows.append(_row("timings", timings))
    for label, key in (("coldseg version", "version"), ("created", "created")):
        if v[key] is not None:
            rows.append(_row(label, v[key]))
    out = "<table>" + "".join(rows) + "</table>"
    cands = aug.get("candidates") if isinstance(aug, dict) else None
    if isinstance(cands, dict) and cands:
        items = sorted(cands.items(), key=lambda kv: -float(kv[1]) if _is_num(kv[1]) else float("inf"))
        body = "".join(
            f"<tr{_WIN if name == winner else ''}><td>{escape(str(name))}</td>"
            f"<td class=\"num\">{escape(_s(loss))}</td></tr>" for name, loss in items)
        out += ("<p>Contrastive loss of each candidate augmentation (the highest wins, eq. 7):</p>"
                f"<table><tr><th>candidate</th><th>loss</th></tr>{body}</table>")
    return out


_WIN = ' class="win"'


def _untrained(check: dict) -> str:
    ref = check.get("untrained")
    if not isinstance(ref, dict) or not (_is_num(ref.get("view_top1")) and _is_num(ref.get("knn_overlap"))):
        return ""
    verdict = "more stable than" if check.get("beats_untrained") else "NOT more stable than"
    return (f"; neighbourhoods {verdict} the untrained network's (which scores {100 * ref['view_top1']:.1f} % "
            f"and {100 * ref['knn_overlap']:.1f} %)")


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def _figure(src: str, alt: str, caption: str) -> str:
    return (f'<figure><img src="{escape(src)}" alt="{escape(alt)}">'
            f"<figcaption>{escape(caption)}</figcaption></figure>")


def _map_caption(proj, facts: dict, n: int, has_labels: bool) -> str:
    colour = "coloured by its cluster (the strategy's own clustering)" if has_labels else "in grey (this strategy has no clusters)"
    if proj.method == "PCA":
        how = f"first two principal components of the {n} feature vectors (too few images for t-SNE)"
    elif proj.subsampled:
        pca = f"PCA to {proj.pca_dims} dimensions, then " if proj.pca_dims else ""
        how = (f"{pca}t-SNE (init=PCA, random_state=0) of a random subsample of {facts['points']} of the "
               f"{n} images that includes {'all' if facts['picks_shown'] else 'no'} picks "
               f"({facts['picks_shown']} shown); the other images are not drawn")
    else:
        how = f"t-SNE (init=PCA, random_state=0) of all {n} feature vectors"
    cap = (f"Every image as a dot {colour}; the picks as black-edged stars (as in Fig. 1c of Jin et al. 2022). "
           f"Projection: {how}. Distances on a t-SNE map are only locally meaningful.")
    if facts.get("legend_capped"):
        cap += " The legend lists the 30 largest clusters."
    return cap


def _swatch(rgba: tuple) -> str:
    r, g, b = (int(round(255 * x)) for x in rgba[:3])
    return f'<span class="sw" style="background:rgb({r},{g},{b})"></span>'


def _picks_table(ids, picks, clusters, distances, has_labels: bool, colours: dict) -> str:
    dist_name = "distance to centroid" if has_labels else "distance to centroid (pool mean when no clusters)"
    rows = "".join(
        f'<tr><td class="num">{r}</td><td><code>{escape(ids[int(i)])}</code></td>'
        f'<td class="num">{"—" if c < 0 else f"{int(c)} {_swatch(colours[int(c)])}"}</td>'
        f'<td class="num">{float(d):.4g}</td></tr>'
        for r, (i, c, d) in enumerate(zip(picks, clusters, distances), start=1))
    return (f"<p>{len(picks)} images to annotate, in pick order:</p><table><tr><th>rank</th><th>id</th>"
            f"<th>cluster</th><th>{escape(dist_name)}</th></tr>{rows}</table>")


def _cell(v: Any, *, code: bool) -> str:
    return f"<code>{escape(_s(v))}</code>" if code else escape(_s(v))


def _pool_problems(m: dict) -> str:
    out = []
    for key, title, col, other in (("skipped", "Skipped files", "reason", "reason"),
                                   ("duplicates", "Duplicates (byte-identical, dropped)", "same as", "same_as")):
        items = _dig(m, "pool", key)
        if not isinstance(items, list) or not items:
            out.append(f"<h2>{title}</h2><p class=\"note\">none</p>" if isinstance(items, list) else "")
            continue
        rows = "".join(
            f"<tr><td>{_cell(it.get('id', '?'), code=True)}</td>"
            f"<td>{_cell(it.get(other, ''), code=other == 'same_as')}</td></tr>"
            if isinstance(it, dict) else f"<tr><td>{_cell(it, code=True)}</td><td></td></tr>"
            for it in items)
        table = f"<table><tr><th>id</th><th>{col}</th></tr>{rows}</table>"
        if len(items) > 20:
            table = f"<details><summary>{len(items)} files</summary>{table}</details>"
        out.append(f"<h2>{title} ({len(items)})</h2>{table}")
    return "\n".join(o for o in out if o)
