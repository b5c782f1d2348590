"""The selection report: files written, PNGs valid, HTML escaped and tolerant of thin manifests."""
from __future__ import annotations

from html import escape

import numpy as np
import pytest
from PIL import Image

import coldseg.report.html as report_html
from coldseg.report.html import write_report
from coldseg.report.plots import GREY, palette, plot_picks, project_2d
from coldseg.select.base import Selection

N = 40
ODD_ID = 'a<b&"c".png'
UNICODE_ID = "dir/ünïcode 'x'>.png"


def _case(rng_seed: int = 0, *, with_labels: bool = True):
    rng = np.random.default_rng(rng_seed)
    labels = np.repeat(np.arange(3), [14, 13, 13])                      # (40,) three blobs
    centers = np.array([[0.0, 0.0, 0.0], [8.0, 0.0, 0.0], [0.0, 8.0, 0.0]])
    X = centers[labels] + rng.normal(scale=0.5, size=(N, 3))            # (40, 3)
    images = rng.integers(0, 256, size=(N, 3, 16, 16), dtype=np.uint8)  # (40, 3, 16, 16)
    images[:5, 1] = images[:5, 0]
    images[:5, 2] = images[:5, 0]                                       # a few grayscale images
    ids = [f"img_{i:03d}.png" for i in range(N)]
    picks = np.array([0, 14, 27, 1, 15, 28, 2, 16, 29])                 # 3 per cluster, interleaved
    ids[0], ids[14] = ODD_ID, UNICODE_ID
    if with_labels:
        info = {"k": 3, "silhouette": {"2": 0.41, "3": 0.83, "4": 0.52, "5": 0.47}}
        sel = Selection(picks, labels[picks], np.linspace(1, 2, 9), labels=labels, info=info)
    else:
        info = {}
        sel = Selection(picks, np.full(9, -1), np.linspace(1, 2, 9), labels=None, info=info)
    manifest = {
        "selection": {"strategy": "ca" if with_labels else "random", "budget": 9, "info": info},
        "pool": {"size": N, "skipped": [{"id": "bro<ken>.jpg", "reason": "cannot identify image"}],
                 "duplicates": [{"id": "copy&1.png", "same_as": "img_001.png"}]},
        "seed": 7,
        "device": "cpu",
        "augmentation": {"winner": "rotate", "candidates": {"rotate": 6.25, "solarize": 5.5}},
        "timings": {"embed": 12.5},
    }
    return ids, images, X, sel, manifest


def _check_png(path):
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.width >= 300 and im.height >= 100
        im.load()
        lo_hi = im.convert("L").getextrema()
        assert lo_hi[0] < lo_hi[1]  # not a blank canvas


def test_full_report(tmp_path):
    ids, images, X, sel, manifest = _case()
    files = write_report(tmp_path, ids=ids, images=images, features=X, selection=sel, manifest=manifest)
    assert files == ["map.png", "silhouette.png", "picks.png", "report.html"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(files)
    for f in files[:-1]:
        _check_png(tmp_path / f)
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    for f in files[:-1]:
        assert f'src="{f}"' in html
    for i in sel.indices:
        assert f"<code>{escape(ids[i])}</code>" in html
    assert 'a&lt;b&amp;&quot;c&quot;.png' in html and ODD_ID not in html
    assert "&#x27;x&#x27;&gt;.png" in html  # quotes and > in the non-ASCII id escaped too
    assert "<th>K (clusters)</th><td>3</td>" in html
    assert "chosen K = 3" in html
    assert "<th>budget</th><td>9 (22.5% of the pool)</td>" in html
    assert "<th>seed</th><td>7</td>" in html
    assert "<th>augmentation winner (eq. 7, hardest)</th><td>rotate</td>" in html
    assert '<tr class="win"><td>rotate</td><td class="num">6.25</td></tr>' in html
    assert "<th>time: embed</th><td>12.5 s</td>" in html
    assert "bro&lt;ken&gt;.jpg" in html and "copy&amp;1.png" in html
    assert "no K sweep" not in html
    # the picks table lists rank 1..9 in pick order
    pos = [html.index(f"<code>{escape(ids[i])}</code>") for i in sel.indices]
    assert pos == sorted(pos)


def test_no_clusters_no_sweep(tmp_path):
    ids, images, X, sel, manifest = _case(with_labels=False)
    files = write_report(tmp_path, ids=ids, images=images, features=X, selection=sel, manifest=manifest)
    assert files == ["map.png", "picks.png", "report.html"]
    assert not (tmp_path / "silhouette.png").exists()
    _check_png(tmp_path / "map.png")
    _check_png(tmp_path / "picks.png")
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "no K sweep for this strategy" in html
    assert "silhouette.png" not in html
    assert "K (clusters)" not in html
    assert "pool mean when no clusters" in html


@pytest.mark.parametrize("manifest", [{}, {"selection": "oops", "pool": {"skipped": "x"}, "timings": 3},
                                      {"pool": {"skipped": [], "duplicates": ["plain<string>"]}}])
def test_thin_or_odd_manifest(tmp_path, manifest):
    ids, images, X, sel, _ = _case()
    files = write_report(tmp_path, ids=ids, images=images, features=X, selection=sel, manifest=manifest)
    # the silhouette then comes from selection.info
    assert files == ["map.png", "silhouette.png", "picks.png", "report.html"]
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert f"<th>pool size</th><td>{N}</td>" in html        # falls back to len(ids)
    assert "<th>budget</th><td>9 (22.5% of the pool)</td>" in html  # falls back to len(picks)
    assert "strategy</th>" not in html and "seed</th>" not in html
    if manifest.get("pool", {}).get("duplicates"):
        assert "plain&lt;string&gt;" in html


def test_api_manifest_layout(tmp_path):
    """The keys coldseg.api.select writes (top-level strategy, budget, timings in *_s)."""
    ids, images, X, sel, _ = _case()
    manifest = {
        "coldseg": "0.1.0", "strategy": "ca", "strategy_params": {"k_min": 2, "k_max": 20}, "budget": 9,
        "budget_requested": "22.5%", "seed": 0, "image_size": 16, "device": "cpu",
        "pool": {"root": "/data/<pool>", "size": N, "grayscale": False, "skipped": [], "duplicates": []},
        "features": {"source": "array", "dim": 3}, "augmentation": None,
        "selection": {"info": sel.info}, "timings": {"read_images_s": 1.24, "features_s": 30.0},
    }
    files = write_report(tmp_path, ids=ids, images=images, features=X, selection=sel, manifest=manifest)
    assert files == ["map.png", "silhouette.png", "picks.png", "report.html"]
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "<h1>coldseg selection report: ca</h1>" in html
    assert "<th>budget</th><td>9 (22.5% of the pool; asked for 22.5%)</td>" in html
    assert "<th>parameters</th><td>{&quot;k_min&quot;: 2, &quot;k_max&quot;: 20}</td>" in html
    assert "<th>images folder</th><td>/data/&lt;pool&gt;</td>" in html
    assert "<th>features</th><td>array, 3-d</td>" in html
    assert "<th>time: read images</th><td>1.2 s</td>" in html
    assert "<th>time: features</th><td>30.0 s</td>" in html
    assert "augmentation winner" not in html
    assert "<h2>Skipped files</h2><p class=\"note\">none</p>" in html


def test_undecodable_id_does_not_crash(tmp_path):
    ids, images, X, sel, manifest = _case()
    ids[1] = "bad\udcff.png"  # os.fsdecode of a non-UTF-8 file name
    write_report(tmp_path, ids=ids, images=images, features=X, selection=sel, manifest=manifest)
    assert "bad\\udcff.png" in (tmp_path / "report.html").read_text(encoding="utf-8")


def test_picks_cap_is_reported(tmp_path, monkeypatch):
    ids, images, X, sel, manifest = _case()
    monkeypatch.setattr(report_html, "PICKS_CAP", 4)
    write_report(tmp_path, ids=ids, images=images, features=X, selection=sel, manifest=manifest)
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "the first 4 of 9 picks by rank are shown" in html
    assert html.count("<code>") == 9 + 3  # the table still lists every pick (+ skipped, duplicate pair)


def test_plot_picks_facts(tmp_path):
    ids, images, X, sel, _ = _case()
    cols = palette(sel.labels)
    facts = plot_picks(tmp_path / "p.png", images, sel.indices, sel.clusters, sel.labels, cols, cap=5)
    assert facts == {"shown": 5, "total": 9, "capped": True, "grouped": True}
    # 31 clusters of one pick each: too many for a row each, one grid sorted by cluster
    facts = plot_picks(tmp_path / "q.png", np.zeros((40, 3, 8, 8), np.uint8), np.arange(31), np.arange(31),
                       None, palette(np.arange(31)), cap=200)
    assert facts == {"shown": 31, "total": 31, "capped": False, "grouped": False}
    _check_png(tmp_path / "q.png")


def test_palette():
    cols = palette([3, -1, 0, 7, 3])
    assert set(cols) == {-1, 0, 3, 7}
    assert cols[-1] == GREY
    assert len({cols[c] for c in (0, 3, 7)}) == 3
    big = palette(range(25))
    assert len({big[c] for c in range(25)}) == 25


def test_project_pca_for_tiny_pools():
    X = np.array([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]])  # collinear: one principal axis
    p = project_2d(X, np.array([0]))
    assert p.method == "PCA" and not p.subsampled
    np.testing.assert_array_equal(p.shown, [0, 1, 2])
    np.testing.assert_allclose(np.abs(p.coords[:, 0]), np.abs([-4 / 3, -1 / 3, 5 / 3]), atol=1e-12)
    np.testing.assert_allclose(p.coords[:, 1], 0.0, atol=1e-12)


def test_project_subsample_keeps_picks_and_is_deterministic():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(60, 64))
    picks = np.array([59, 3, 17, 40, 8])
    a = project_2d(X, picks, max_points=20, seed=0)
    b = project_2d(X, picks, max_points=20, seed=0)
    assert a.method == "t-SNE" and a.subsampled and a.pca_dims == 50
    assert a.coords.shape == (20, 2) and len(np.unique(a.shown)) == 20
    assert np.all(np.diff(a.shown) > 0) and set(picks) <= set(a.shown.tolist())
    np.testing.assert_array_equal(a.shown, b.shown)
    np.testing.assert_array_equal(a.coords, b.coords)
    many = project_2d(X, np.arange(25), max_points=20, seed=0)  # more picks than points: picks only
    assert len(many.shown) == 20 and set(many.shown.tolist()) <= set(range(25))


def test_bad_inputs(tmp_path):
    ids, images, X, sel, manifest = _case()
    with pytest.raises(ValueError, match="features have 39 rows but there are 40 ids"):
        write_report(tmp_path, ids=ids, images=images, features=X[:-1], selection=sel, manifest=manifest)
    with pytest.raises(ValueError, match="uint8"):
        write_report(tmp_path, ids=ids, images=images.astype(np.float32), features=X, selection=sel,
                     manifest=manifest)
    with pytest.raises(ValueError, match=r"shape \(40, 3, S, S\)"):
        write_report(tmp_path, ids=ids, images=images[:, :1], features=X, selection=sel, manifest=manifest)
    bad = Selection(np.array([0, 40]), np.array([0, 0]), np.array([1.0, 1.0]))
    with pytest.raises(ValueError, match=r"rows in \[0, 40\)"):
        write_report(tmp_path, ids=ids, images=images, features=X, selection=bad, manifest=manifest)
