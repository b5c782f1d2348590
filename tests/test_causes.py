"""coldseg.bench.causes: within-group correlation of set measures with Dice, on synthetic runs."""
from __future__ import annotations

import numpy as np
import pytest

from coldseg.bench.causes import (centred_within, correlation, correlations, mask_measures, markdown,
                                  measure_runs, strategy_means)


def _rows(effect: float, seed: int = 0):
    """3 strategies x 3 ratios x 6 seeds; Dice = group offset + effect * measure + noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for ratio in (5.0, 10.0, 20.0):
        for s in range(6):
            offset = 30 + ratio + 5 * rng.normal()          # shared by every run of the group
            for name in ("a", "b", "c"):
                m = rng.normal()
                rows.append({"strategy": name, "ratio": ratio, "seed": s, "m": m,
                             "dice": offset + effect * m + 0.1 * rng.normal()})
    return rows


def test_centring_removes_group_offsets():
    c = centred_within(_rows(0.0), ("dice", "m"))
    assert len(c["dice"]) == 54
    # 18 groups of 3: every group sums to zero
    assert np.allclose(c["dice"].reshape(-1, 3).sum(1), 0.0)
    assert sorted(c["row"].astype(int).tolist()) == list(range(54))


def test_a_real_effect_is_found_and_a_null_one_is_not():
    strong = {c.ratio: c for c in correlations(_rows(2.0), ["m"], boot=200)}
    assert strong[None].r > 0.9 and strong[None].low > 0.8
    null = {c.ratio: c for c in correlations(_rows(0.0), ["m"], boot=200)}
    assert null[None].low < 0 < null[None].high
    assert set(strong) == {None, 5.0, 10.0, 20.0}


def test_groups_of_one_are_dropped_and_constants_give_nan():
    rows = _rows(1.0)[:4]                                     # ratio 5: seed 0 (3 runs), seed 1 (1 run)
    assert len(centred_within(rows, ("dice",))["dice"]) == 3
    r, low, high = correlation(np.zeros(5), np.arange(5.0))
    assert np.isnan(r) and np.isnan(low)


def test_measures_of_runs_and_tables():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 6))
    ids = [f"im{i}" for i in range(40)]
    fg = np.linspace(0, 0.5, 40)
    runs = [{"strategy": "random", "ratio": 10.0, "seed": s, "dice": 0.5, "ids": ids[s:s + 8]} for s in range(3)]
    runs.append({"strategy": "full", "ratio": 100.0, "seed": 0, "dice": 0.7, "ids": ids})
    rows = measure_runs(runs, ids, lambda seed: X, fg, np.ones(40))
    assert len(rows) == 3 and rows[0]["dice"] == 50.0
    assert rows[0]["fg"] == pytest.approx(fg[:8].mean())
    assert 0 <= rows[0]["density"] <= 1 and rows[0]["cover"] > 0 and rows[0]["mmd"] >= 0
    assert mask_measures(fg, np.arange(4))["small"] == 1.0
    assert "`random` | 3" in strategy_means(rows, ["fg"])
    with pytest.raises(ValueError, match="outside the pool"):
        measure_runs([{**runs[0], "ids": ["nope"]}], ids, lambda seed: X, fg, np.ones(40))
    table = markdown(correlations(_rows(1.0), ["m"], boot=50))
    assert table.startswith("| measure | all ratios | 5 % | 10 % | 20 % |")


def test_script_rejects_a_folder_that_is_not_a_benchmark(tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("set_stats", Path(__file__).parents[1] / "scripts" / "set_stats.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main([str(tmp_path)]) == 2
    assert "not a benchmark folder" in capsys.readouterr().err


def test_encoded_r2_sees_a_carried_measure_and_not_noise():
    from coldseg.bench.causes import encoded_r2

    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 8))
    assert encoded_r2(X, X[:, 0] / np.linalg.norm(X, axis=1)) > 0.9
    assert encoded_r2(X, rng.normal(size=200)) < 0.1
    assert np.isnan(encoded_r2(X, np.ones(200)))


def test_load_folder_rebuilds_the_split_and_refuses_other_data(tmp_path):
    """A tiny benchmark folder by hand: settings.json, runs.jsonl, features; --data points at the images."""
    import json

    from PIL import Image

    from coldseg.bench.causes import load_folder

    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    rng = np.random.default_rng(0)
    ids = [f"im{i:02d}" for i in range(20)]
    for i in ids:
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(data / "images" / f"{i}.png")
        m = np.zeros((16, 16), np.uint8)
        m[: int(i[2:]) % 8 + 1] = 255
        Image.fromarray(m).save(data / "masks" / f"{i}.png")
    import hashlib

    sha = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]
    folder = tmp_path / "bench"
    (folder / "features").mkdir(parents=True)
    settings = {"dataset": "/elsewhere/data", "image_size": 16, "test_fraction": 0.2, "split_seed": 0,
                "ids_sha256": sha, "features": "moco"}
    (folder / "settings.json").write_text(json.dumps({"sessions": [], "settings": settings}))
    np.save(folder / "features" / "moco-seed0.npy", rng.normal(size=(16, 4)).astype(np.float32))
    (folder / "runs.jsonl").write_text("")
    with pytest.raises(ValueError, match="is not a folder"):
        load_folder(folder)
    runs, pool_ids, features_of, fg, contrast = load_folder(folder, data)
    assert len(pool_ids) == 16 and fg.shape == (16,) and features_of(0).shape == (16, 4)
    assert set(pool_ids) <= set(ids) and 0 < fg.mean() < 1
    with pytest.raises(ValueError, match="moco-seed1.npy is missing"):      # seed 1's encoder was never saved
        features_of(1)
    skip_features_of = load_folder(folder, data, missing_features="skip")[2]
    assert skip_features_of(1) is None and skip_features_of(0).shape == (16, 4)
    with pytest.raises(ValueError, match="'error' or 'skip'"):
        load_folder(folder, data, missing_features="ignore")
    (data / "images" / "im00.png").unlink()
    (data / "masks" / "im00.png").unlink()
    with pytest.raises(ValueError, match="other images"):
        load_folder(folder, data)


def test_plot_causes_draws_one_row_per_folder(tmp_path):
    from PIL import Image

    from coldseg.bench.causes import plot_causes

    rows = [{**r, "density": r["m"], "mmd": -r["m"], "fg": 0.1 * r["m"]} for r in _rows(1.0)]
    path = plot_causes(tmp_path / "sub" / "causes.png", [("one", rows), ("two", rows)])
    w, h = Image.open(path).size
    assert h > w / 2 and path.stat().st_size > 10_000          # 2 rows x 3 columns of panels


def test_runs_without_features_keep_their_label_measures():
    """A folder of random draws whose features are absent: cover/density/mmd are nan, correlations of
    the label-based measures still come out (over every run), the feature ones say n/a."""
    rng = np.random.default_rng(1)
    ids = [f"im{i}" for i in range(60)]
    fg = rng.uniform(0, 0.4, 60)
    runs = [{"strategy": f"random[draw={j}]", "ratio": r, "seed": s, "ids": list(rng.choice(ids, 6, replace=False))}
            for r in (5.0, 10.0) for s in range(2) for j in range(6)]
    pos = {i: k for k, i in enumerate(ids)}
    for run in runs:                                      # Dice follows the picks' foreground
        run["dice"] = 0.3 + fg[[pos[i] for i in run["ids"]]].mean()
    rows = measure_runs(runs, ids, lambda seed: None, fg, np.ones(60))
    assert all(np.isnan(r["cover"]) and np.isfinite(r["fg"]) for r in rows)
    corrs = {(c.stat, c.ratio): c for c in correlations(rows, ["cover", "fg"], boot=50)}
    assert corrs[("fg", None)].r == pytest.approx(1.0) and corrs[("fg", None)].n == 24
    assert corrs[("cover", None)].n == 0
    assert "| cover | n/a (no features) |" in markdown(list(corrs.values()))
