"""Real-data runs on small subsets of ../shared/data (skipped when it is absent): ISIC 2017 dermoscopy
(colour) and chest X-rays (grayscale), 32 px, 2 epochs of the tiny encoder, every output checked."""
import csv
import dataclasses
import json
import shutil

import numpy as np
import pytest

import coldseg
from coldseg.features.augment import CANDIDATES, COLOR_ONLY
from conftest import HAS_REPORT

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest


def subset(shared_data, dataset, n, dest):
    """Copy every k-th of the dataset's images (sorted) into ``dest``: n images from across the set."""
    src = shared_data / dataset / "images"
    if not src.is_dir():
        pytest.skip(f"../shared/data/{dataset} not found")
    files = sorted(p for p in src.iterdir() if p.is_file())
    if len(files) < n:
        pytest.skip(f"../shared/data/{dataset} holds {len(files)} images, fewer than {n}")
    picked = files[:: len(files) // n][:n]
    dest.mkdir()
    for p in picked:
        shutil.copyfile(p, dest / p.name)
    return sorted(p.name for p in picked)


def check_outputs(out, names, budget, n, report):
    with open(out / "selection.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == budget
    ids = [r["id"] for r in rows]
    assert len(set(ids)) == budget and set(ids) <= set(names)  # nothing picked outside the subset
    assert [int(r["rank"]) for r in rows] == list(range(1, budget + 1))
    assert (out / "selected.txt").read_text().splitlines() == [r["path"] for r in rows]
    assert len(json.loads((out / "labelstudio.json").read_text())) == budget
    X = np.load(out / "features.npy")
    feats = json.loads((out / "manifest.json").read_text())["features"]
    assert feats["layer"] == "backbone" and X.shape == (n, 8 * feats["settings"]["width"])   # pooled ResNet-18
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-5)
    assert (out / "feature_ids.txt").read_text().splitlines() == names
    assert (out / "report.html").is_file() == report
    man = json.loads((out / "manifest.json").read_text())
    assert man["pool"]["size"] == n and man["pool"]["skipped"] == [] and man["budget"] == budget
    assert sorted(man["files"]) == sorted(p.name for p in out.iterdir())
    return man


def test_isic2017_subset(shared_data, tmp_path, tiny_moco):
    names = subset(shared_data, "isic2017", 64, tmp_path / "pool")
    cfg = dataclasses.replace(tiny_moco, batch_size=16, candidates="auto")  # every eq. 7 candidate
    out = tmp_path / "out"
    res = coldseg.select(tmp_path / "pool", "10%", out=out, strategy="ca", seed=0, moco=cfg,
                         cache_dir=tmp_path / "cache", report=HAS_REPORT, progress=False)
    man = check_outputs(out, names, 6, 64, HAS_REPORT)  # 10% of 64 = 6.4 -> 6
    assert res.pool.grayscale is False and man["pool"]["grayscale"] is False
    assert set(man["augmentation"]["candidates"]) == set(CANDIDATES)
    assert man["augmentation"]["winner"] in CANDIDATES
    assert 2 <= man["selection"]["info"]["k"] <= 6


def test_chest_xray_subset_is_grayscale(shared_data, tmp_path, tiny_moco):
    names = subset(shared_data, "chest_xray_lungs", 24, tmp_path / "pool")
    cfg = dataclasses.replace(tiny_moco, candidates="auto")
    out = tmp_path / "out"
    coldseg.select(tmp_path / "pool", 4, out=out, strategy="ca", seed=0, moco=cfg, cache_dir=tmp_path / "cache",
                   report=False, progress=False)
    man = check_outputs(out, names, 4, 24, False)
    assert man["pool"]["grayscale"] is True
    # colour-only candidates change nothing on a grayscale image and are left out
    assert set(man["augmentation"]["candidates"]) == set(CANDIDATES) - set(COLOR_ONLY)
