"""hard-contrast: MoCo's per-image confidence (recorded during training, cached beside the features) and
the strategy that picks the least confident image of each K-means cluster."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from coldseg.bench.features import cached_features, side_path
from coldseg.select.registry import get_selector


def _blobs(sizes, d=6, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(sizes), d)) * 10
    X = np.concatenate([c + 0.1 * rng.normal(size=(m, d)) for c, m in zip(centres, sizes)])
    return X.astype(np.float32), np.repeat(np.arange(len(sizes)), sizes)


def test_picks_the_least_confident_member_of_each_cluster():
    X, labels = _blobs([30, 20, 10])
    conf = np.random.default_rng(1).uniform(0.2, 0.9, len(X))
    sel = get_selector("hard-contrast").select(X, 3, random_state=0, side={"confidence": conf})
    # one pick per blob, and in each blob the row with the lowest confidence
    assert sorted(labels[sel.indices].tolist()) == [0, 1, 2]
    for i in sel.indices:
        blob = np.flatnonzero(labels == labels[i])
        assert i == blob[np.argmin(conf[blob])]
    assert sel.info["confidence"] == [round(float(conf[i]), 6) for i in sel.indices]
    json.dumps(sel.info)


def test_more_picks_than_clusters_go_hardest_first_within_a_cluster():
    X, labels = _blobs([40])
    conf = np.linspace(0.9, 0.1, 40)      # the last rows are the hardest
    sel = get_selector("hard-contrast", max_clusters=1).select(X, 4, random_state=0, side={"confidence": conf})
    assert sel.indices.tolist() == [39, 38, 37, 36]


def test_refuses_a_missing_or_bad_confidence():
    X, _ = _blobs([10, 10])
    hc = get_selector("hard-contrast")
    with pytest.raises(ValueError, match="needs the per-image 'confidence'"):
        hc.select(X, 2)
    with pytest.raises(ValueError, match=r"one value per image \(20,\)"):
        hc.select(X, 2, side={"confidence": np.ones(19)})
    bad = np.ones(20)
    bad[3] = np.nan
    with pytest.raises(ValueError, match=r"NaN or inf at rows \[3\]"):
        hc.select(X, 2, side={"confidence": bad})
    # strategies that do not read it ignore side arrays
    assert len(get_selector("kmedian").select(X, 2, random_state=0, side={"confidence": bad})) == 2


def test_moco_records_a_confidence_for_every_image(tiny_moco):
    from coldseg.features.train import _steps_per_epoch, moco_epochs, train_moco

    images = np.random.default_rng(0).integers(0, 256, (16, 3, 32, 32), dtype=np.uint8)
    cfg = dataclasses.replace(tiny_moco, candidates="none")
    model, log = train_moco(images, cfg, seed=1, progress=False)
    counts = model.confidence_count.numpy()
    # every step adds one term per query: epochs · steps · batch in all, every image seen each epoch
    assert counts.sum() == moco_epochs(cfg, 16) * _steps_per_epoch(cfg, 16) * cfg.batch_size
    assert (counts == moco_epochs(cfg, 16)).all()
    conf = model.confidence()
    assert conf.shape == (16,) and conf.dtype == np.float32
    assert ((conf > 0) & (conf <= 1)).all()
    # the mean of exp(-loss) over queries is at least exp(-mean loss) (Jensen): ties the tally to the loss
    assert float(np.mean(conf)) >= np.exp(-np.mean(log["loss"])) - 1e-6


def test_confidence_is_cached_and_old_caches_are_retrained_when_needed(tiny_moco, tmp_path, one_torch_thread):
    from coldseg.features.embed import compute_features

    images = np.random.default_rng(0).integers(0, 256, (16, 3, 32, 32), dtype=np.uint8)
    cfg = dataclasses.replace(tiny_moco, epochs=1, candidates="none")
    X, info = compute_features(images, seed=0, settings=cfg, cache_dir=tmp_path, progress=False)
    folder = tmp_path / info["cache_key"]
    np.testing.assert_array_equal(np.load(folder / "confidence.npy"), info["confidence"])
    X2, hit = compute_features(images, seed=0, settings=cfg, cache_dir=tmp_path, progress=False)
    assert hit["cache_hit"] and np.array_equal(hit["confidence"], info["confidence"])
    # a damaged confidence (not one value per image) is not returned, and is retrained when needed
    np.save(folder / "confidence.npy", np.ones(3, np.float32))
    assert compute_features(images, seed=0, settings=cfg, cache_dir=tmp_path, progress=False)[1]["confidence"] is None
    np.save(folder / "confidence.npy", info["confidence"])
    # a cache written before the confidence was recorded: used as is, unless the caller needs it
    (folder / "confidence.npy").unlink()
    old = compute_features(images, seed=0, settings=cfg, cache_dir=tmp_path, progress=False)[1]
    assert old["cache_hit"] and old["confidence"] is None
    again = compute_features(images, seed=0, settings=cfg, cache_dir=tmp_path, progress=False,
                             need_confidence=True)[1]
    assert not again["cache_hit"] and (folder / "confidence.npy").exists()
    np.testing.assert_array_equal(again["confidence"], info["confidence"])    # CPU training is deterministic


def test_benchmark_cache_keeps_side_arrays_beside_the_features(tmp_path):
    images = np.zeros((5, 3, 8, 8), np.uint8)
    calls = []

    def fn(imgs, seed):
        calls.append(seed)
        return np.eye(5, 3, dtype=np.float32), {"confidence": np.linspace(0.1, 0.5, 5)}

    path = tmp_path / "features" / "moco-seed0.npy"
    X, side = cached_features(fn, images, 0, path, ("confidence",))
    assert side_path(path, "confidence").name == "moco-seed0.confidence.npy"
    X2, side2 = cached_features(fn, images, 0, path, ("confidence",))
    assert calls == [0] and np.array_equal(X, X2)
    np.testing.assert_array_equal(side2["confidence"], np.linspace(0.1, 0.5, 5))
    # a side array of the wrong length is named, with the fix
    np.save(side_path(path, "confidence"), np.ones(4))
    with pytest.raises(ValueError, match=r"moco-seed0.confidence.npy holds \(4,\) values for 5 pool images"):
        cached_features(fn, images, 0, path, ("confidence",))
    # a folder whose features predate the side array is refused, not silently retrained
    side_path(path, "confidence").unlink()
    with pytest.raises(ValueError, match="new --out folder"):
        cached_features(fn, images, 0, path, ("confidence",))
    # features that cannot record it (pixels) are refused for such a strategy
    with pytest.raises(ValueError, match="do not record confidence"):
        cached_features(lambda imgs, s: np.eye(5, 3), images, 0, tmp_path / "p.npy", ("confidence",))


def test_benchmark_refuses_hard_contrast_on_pixel_features(tmp_path):
    from coldseg.bench.sweep import BenchmarkConfig, validate

    cfg = BenchmarkConfig(data_dir=tmp_path, out_dir=tmp_path / "o", strategies=["random", "hard-contrast"],
                          ratios=[10], seeds=[0], features="pixels")
    with pytest.raises(ValueError, match="needs --features moco"):
        validate(cfg)


def test_select_refuses_hard_contrast_with_a_features_file(pool_dir, tmp_path):
    import coldseg

    with pytest.raises(ValueError, match="drop --features"):
        coldseg.select(pool_dir, 3, out=tmp_path / "o", strategy="hard-contrast",
                       features=np.zeros((24, 4), np.float32), progress=False)
    assert not (tmp_path / "o").exists()


@pytest.mark.filterwarnings("ignore:the trained features")
def test_select_end_to_end(pool_dir, tiny_moco, tmp_path, one_torch_thread):
    import coldseg

    res = coldseg.select(pool_dir, 4, out=tmp_path / "o", strategy="hard-contrast", moco=tiny_moco,
                         progress=False, report=False)
    man = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert man["strategy"] == "hard-contrast" and len(man["selection"]["info"]["confidence"]) == 4
    assert len(res.ids) == 4
