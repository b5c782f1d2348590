"""The benchmark harness: statistics by hand, iterative-strategy invariants, and a whole tiny sweep on CPU."""
import csv
import dataclasses
import math
import time
import warnings

import numpy as np
import pytest
from PIL import Image

from coldseg.bench import results as R
from coldseg.bench.features import pixel_features
from coldseg.bench.report import write_report
from coldseg.bench.stats import paired_differences, summarize, t_interval
from coldseg.bench.sweep import BenchmarkConfig, run_benchmark, strategy_kinds
from coldseg.iterative import get_iterative, iterative_names, round_sizes
from coldseg.iterative.coreset_rounds import kcenter_from, sq_dist_to_set
from coldseg.iterative.mc_dropout import mean_predictive_entropy, top_k

# tiny U-Nets train ~10x faster on one thread than on two contended ones (2-core CI)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---------------------------------------------------------------- statistics, by hand


def test_t_interval_hand_computed():
    # d = 1, 2, 3, 4: mean 2.5, s = sqrt(5/3) = 1.2909944, s/sqrt(4) = 0.6454972,
    # t_{0.975, 3} = 3.1824463 (t table) -> half width 2.0542603
    mean, lo, hi, n = t_interval([1.0, 2.0, 3.0, 4.0])
    assert n == 4 and mean == pytest.approx(2.5)
    assert lo == pytest.approx(2.5 - 2.0542603, abs=1e-6)
    assert hi == pytest.approx(2.5 + 2.0542603, abs=1e-6)
    # two values 0.1 and 0.3: mean 0.2, s = 0.1414214, se = 0.1, t_{0.975, 1} = 12.7062047
    mean, lo, hi, n = t_interval([0.1, 0.3])
    assert (mean, n) == (pytest.approx(0.2), 2)
    assert (lo, hi) == (pytest.approx(0.2 - 1.27062047, abs=1e-7), pytest.approx(0.2 + 1.27062047, abs=1e-7))
    mean, lo, hi, n = t_interval([0.5])
    assert mean == 0.5 and n == 1 and math.isnan(lo) and math.isnan(hi)
    with pytest.raises(ValueError, match="confidence"):
        t_interval([1.0, 2.0], confidence=1.5)


def _row(strategy, ratio, seed, dice, hd95=1.0, n=10):
    return {"dataset": "d", "strategy": strategy, "ratio": float(ratio), "n_labeled": n, "seed": seed,
            "dice": dice, "hd95": hd95, "train_seconds": 1.0, "device": "cpu"}


def test_paired_differences_match_seeds_and_skip_unmatched():
    rows = [_row("random", 10, 0, 0.50), _row("random", 10, 1, 0.60), _row("random", 10, 2, 0.70),
            _row("ca", 10, 0, 0.55), _row("ca", 10, 1, 0.62), _row("ca", 10, 3, 0.99),   # seed 3 unmatched
            _row("full", 100, 0, 0.9, n=100)]
    diffs = {(d.strategy, d.metric): d for d in paired_differences(rows)}
    assert set(diffs) == {("ca", "dice"), ("ca", "hd95")}              # random and full are not compared
    d = diffs[("ca", "dice")]
    assert d.seeds == [0, 1] and d.n == 2
    assert d.mean == pytest.approx(0.035)                                # (0.05 + 0.02) / 2
    half = 12.7062047 * np.std([0.05, 0.02], ddof=1) / math.sqrt(2)
    assert (d.lo, d.hi) == (pytest.approx(0.035 - half, abs=1e-7), pytest.approx(0.035 + half, abs=1e-7))
    assert diffs[("ca", "hd95")].mean == 0.0


def test_summarize_mean_std_over_seeds():
    rows = [_row("random", 5, s, v, hd95=h) for s, (v, h) in enumerate([(0.2, 3.0), (0.4, float("nan")), (0.6, 5.0)])]
    by = {(s.metric): s for s in summarize(rows)}
    assert by["dice"].mean == pytest.approx(0.4) and by["dice"].std == pytest.approx(0.2) and by["dice"].n == 3
    assert by["hd95"].mean == pytest.approx(4.0) and by["hd95"].n == 2 and by["hd95"].n_runs == 3


def test_results_roundtrip_and_partial_line(tmp_path):
    with R.ResultsWriter(tmp_path) as w:
        w.write(_row("random", 12.5, 0, 0.25))
    with open(tmp_path / R.RESULTS, "a") as f:
        f.write("d,random,5,3,1,0.")                                       # a crash mid-row
    rows = R.read_results(tmp_path)
    assert len(rows) == 1 and rows[0]["ratio"] == 12.5 and rows[0]["dice"] == 0.25
    with R.ResultsWriter(tmp_path) as w:                                   # reopening drops the fragment
        w.write(_row("random", 5, 1, 0.5))
    assert [r["seed"] for r in R.read_results(tmp_path)] == [0, 1]
    assert R.RunKey.of({"dataset": "d", "strategy": "random", "ratio": "12.50", "seed": "0"}) in R.done_keys(tmp_path)


# ---------------------------------------------------------------- iterative pieces


def test_round_sizes_sum_to_budget():
    assert round_sizes(10, 3) == [4, 3, 3]
    assert round_sizes(9, 3) == [3, 3, 3]
    assert round_sizes(5, 1) == [5]
    with pytest.warns(UserWarning, match="smaller than rounds"):
        assert round_sizes(2, 3) == [1, 1]
    for b in range(1, 40):
        for r in range(1, 6):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                s = round_sizes(b, r)
            assert sum(s) == b and max(s) - min(s) <= 1


def test_mean_predictive_entropy_hand_computed():
    p = np.zeros((2, 2, 1, 2))
    p[0, :, 0, 0] = [0.5, 0.5]          # ln 2
    p[0, :, 0, 1] = [1.0, 0.0]          # 0 (0 log 0 = 0)
    p[1, :, 0, :] = [[0.9, 0.9], [0.1, 0.1]]
    h = mean_predictive_entropy(p)
    h9 = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))
    assert h == pytest.approx([math.log(2) / 2, h9])
    assert top_k(np.array([0.1, 0.5, 0.5, 0.2]), 3).tolist() == [1, 2, 3]   # tie -> lower position


def test_kcenter_from_labelled_hand_computed():
    X = np.array([[0.0], [1.0], [5.0], [6.0], [10.0]])
    assert sq_dist_to_set(X, X[[0, 4]]).tolist() == [0.0, 1.0, 25.0, 16.0, 0.0]
    # labelled {0}: farthest is 10 (idx 4); then d = [.,1,25,16,.] vs 10 -> [.,1,25,16] min with
    # (9², 5², 4²) = [1, 25, 16] -> 5 (idx 2)
    assert kcenter_from(X, np.array([0]), 2).tolist() == [4, 2]
    Xd = np.zeros((4, 2))                                                # duplicates of the labelled row
    assert sorted(kcenter_from(Xd, np.array([1]), 3).tolist()) == [0, 2, 3]


def test_strategy_names_resolve_and_unknown_lists_valid():
    assert {"bayesian", "coreset-iter"} <= set(iterative_names())
    kinds = strategy_kinds(["random", "bayesian", "full"])
    assert kinds == {"random": "selector", "bayesian": "iterative", "full": "full"}
    with pytest.raises(ValueError, match="unknown strategy name.*'nope'.*random"):
        strategy_kinds(["random", "nope"])
    with pytest.raises(ValueError, match="mc_samples"):
        get_iterative("bayesian", mc_samples=1)


def test_pixel_features_shape_and_determinism():
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (12, 3, 16, 16), dtype=np.uint8)
    f = pixel_features(imgs, 0)
    assert f.shape == (12, 12) and np.isfinite(f).all()
    assert np.array_equal(f, pixel_features(imgs, 5))


# ---------------------------------------------------------------- the whole sweep on CPU


def write_pairs(root, n=24, size=32, seed=0):
    """n RGB images with one bright disc each (the mask), on a noisy dark background."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        cy, cx = rng.integers(8, size - 8, 2)
        r = rng.integers(4, 8)
        m = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        img = rng.integers(0, 60, (size, size, 3))
        img[m] = 180 + rng.integers(0, 60, 3)
        Image.fromarray(img.astype(np.uint8)).save(root / "images" / f"img{i:02d}.png")
        Image.fromarray((m * 255).astype(np.uint8)).save(root / "masks" / f"img{i:02d}.png")
    return root


def fake_features(images, seed):
    return pixel_features(images, seed, grid=4, dim=8)


def tiny_config(data, out, **kw):
    from coldseg.segment.train import SegConfig

    base = dict(data_dir=data, out_dir=out, strategies=["random", "bayesian"], ratios=[25, 50], seeds=[0, 1],
                image_size=32, seg=SegConfig(steps=10, batch_size=8, channels=(8, 16, 32)), features="fake",
                progress=False, device="cpu")
    base.update(kw)
    return BenchmarkConfig(**base)


def test_tiny_sweep_end_to_end_resume_and_mismatch(tmp_path):
    from coldseg.data.splits import subset_size

    data = write_pairs(tmp_path / "data")
    out = tmp_path / "out"
    res = run_benchmark(tiny_config(data, out), features_fn=fake_features)
    rows = R.read_results(out)
    assert res.new_runs == len(rows) == 2 * 2 * 2 + 2                    # strategies×ratios×seeds + full per seed
    n_pool = 24 - round(0.2 * 24)
    for r in rows:
        assert 0.0 <= r["dice"] <= 1.0 and r["hd95"] >= 0.0 and r["train_seconds"] > 0
        want = n_pool if r["strategy"] == "full" else subset_size(r["ratio"], n_pool)
        assert r["n_labeled"] == want
    assert sorted({(r["strategy"], r["ratio"]) for r in rows}) == [
        ("bayesian", 25.0), ("bayesian", 50.0), ("full", 100.0), ("random", 25.0), ("random", 50.0)]
    with open(out / R.RESULTS) as f:
        assert next(csv.reader(f)) == R.COLUMNS
    for name in ("results.csv", "figure.png", "report.md", "report.html", "settings.json", "runs.jsonl"):
        assert (out / name).stat().st_size > 0, name
    records = R.read_jsonl(out / R.RUNS)
    assert len(records) == len(rows)
    for rec in records:                                                   # picks: unique pool ids, right count
        assert len(rec["ids"]) == len(set(rec["ids"])) == rec["n_labeled"]
    bay = [rec for rec in records if rec["strategy"] == "bayesian" and rec["ratio"] == 50.0]
    assert bay[0]["selection"]["round_sizes"] == [4, 3, 3]               # subset_size(50, 19) = 10
    md = (out / "report.md").read_text()
    assert "paired difference to random" in md and "bayesian" in md

    t0 = time.perf_counter()
    again = run_benchmark(tiny_config(data, out), features_fn=fake_features)
    assert again.new_runs == 0 and again.skipped_runs == len(rows)
    assert len(R.read_results(out)) == len(rows)
    assert time.perf_counter() - t0 < 10

    # a crash after the iterative rounds but before their final trainings: the picks are reused
    lines = (out / R.RESULTS).read_text().splitlines(keepends=True)
    (out / R.RESULTS).write_text("".join(l for l in lines if ",bayesian," not in l))
    before = {(r["ratio"], r["seed"]): r["ids"] for r in records if r["strategy"] == "bayesian"}
    redo = run_benchmark(tiny_config(data, out), features_fn=fake_features)
    assert redo.new_runs == 4 and len(R.read_results(out)) == len(rows)
    after = {(r["ratio"], r["seed"]): r["ids"] for r in R.read_jsonl(out / R.RUNS)[len(records):]}
    assert after == before

    with pytest.raises(R.SettingsMismatch, match="seg.steps"):
        from coldseg.segment.train import SegConfig

        run_benchmark(tiny_config(data, out, seg=SegConfig(steps=11, batch_size=8, channels=(8, 16, 32))),
                      features_fn=fake_features)
    assert len(R.read_results(out)) == len(rows)


def test_random_and_full_alone_compute_no_features_and_pick_the_same(tmp_path):
    """`random` reads only n and the seed: a random-only sweep trains no encoder, and its picks are
    those of a sweep that did compute features."""
    data = write_pairs(tmp_path / "data")

    def refuse(images, seed):
        raise AssertionError("features computed for a sweep that reads none")

    alone = run_benchmark(tiny_config(data, tmp_path / "a", strategies=["random"]), features_fn=refuse)
    assert alone.new_runs == 2 * 2 + 2
    assert not list((tmp_path / "a" / "features").glob("*.npy"))
    run_benchmark(tiny_config(data, tmp_path / "b", strategies=["random", "kcenter"]), features_fn=fake_features)
    assert list((tmp_path / "b" / "features").glob("*.npy"))
    ids = {d: {(r["ratio"], r["seed"]): r["ids"] for r in R.read_jsonl(tmp_path / d / R.RUNS)
               if r["strategy"] == "random"} for d in "ab"}
    assert len(ids["a"]) == 4 and ids["a"] == ids["b"]


def test_fixed_draws_pick_the_same_images_for_every_seed(tmp_path):
    """`random[draw=j]` keeps the pick set fixed across seeds (only the U-Net's training changes), a
    different j is a different set, and plain `random` still draws anew per seed."""
    data = write_pairs(tmp_path / "data")
    out = tmp_path / "d"
    strategies = ["random", "random[draw=1]", "random[draw=2]"]
    run_benchmark(tiny_config(data, out, strategies=strategies, seeds=[0, 1, 2], ratios=[25], include_full=False),
                  features_fn=fake_features)
    ids = {}
    for rec in R.read_jsonl(out / R.RUNS):
        ids.setdefault(rec["strategy"], []).append(tuple(sorted(rec["ids"])))
    assert sorted(ids) == sorted(strategies) and all(len(v) == 3 for v in ids.values())
    assert len(set(ids["random[draw=1]"])) == 1 and len(set(ids["random[draw=2]"])) == 1
    assert ids["random[draw=1]"][0] != ids["random[draw=2]"][0]
    assert len(set(ids["random"])) == 3
    dice = {(r["strategy"], r["seed"]): r["dice"] for r in R.read_results(out)}
    assert len(dice) == 9


def test_cli_tiny_pixels_and_report(tmp_path, capsys):
    from coldseg.cli import main

    data = write_pairs(tmp_path / "data", n=16)
    out = tmp_path / "out"
    rc = main(["benchmark", str(data), "--strategies", "random,coreset-iter", "--ratios", "50", "--seeds", "1",
               "--out", str(out), "--tiny", "--features", "pixels", "--rounds", "2", "--device", "cpu", "--quiet"])
    assert rc == 0
    rows = R.read_results(out)
    assert sorted(r["strategy"] for r in rows) == ["coreset-iter", "full", "random"]
    rec = R.read_settings(out)
    assert rec["settings"]["image_size"] == 32 and rec["settings"]["seg"]["steps"] == 10
    cmd = rec["sessions"][0]["command"]
    assert cmd.startswith("coldseg benchmark") and "--tiny" in cmd and rec["sessions"][0]["wall_seconds"] > 0
    (out / "figure.png").unlink()
    assert main(["report", str(out)]) == 0
    assert (out / "figure.png").exists() and cmd in (out / "report.md").read_text()
    # the same folder with another image size is refused, clearly
    assert main(["benchmark", str(data), "--strategies", "random", "--ratios", "50", "--seeds", "1",
                 "--out", str(out), "--tiny", "--image-size", "16", "--features", "pixels", "--quiet"]) == 2
    assert "image_size" in capsys.readouterr().err


def test_cli_rejects_bad_names_and_bad_pairs_before_training(tmp_path, capsys):
    from coldseg.cli import main

    rc = main(["benchmark", str(tmp_path / "missing"), "--strategies", "random,bogus", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "bogus" in err and "coreset-iter" in err and "random" in err
    data = write_pairs(tmp_path / "data", n=6)
    (data / "masks" / "img03.png").unlink()
    rc = main(["benchmark", str(data), "--strategies", "random", "--ratios", "50", "--seeds", "1",
               "--out", str(tmp_path / "o2"), "--tiny", "--features", "pixels", "--quiet"])
    assert rc == 2 and "img03" in capsys.readouterr().err
    assert not (tmp_path / "o2" / "results.csv").exists()


def test_report_from_results_csv_alone(tmp_path):
    with R.ResultsWriter(tmp_path) as w:
        for s, base in (("random", 0.5), ("ca", 0.55)):
            for ratio in (5, 10):
                for seed in range(3):
                    w.write(_row(s, ratio, seed, base + 0.01 * ratio + 0.01 * seed, hd95=10 - ratio / 10))
        w.write(_row("full", 100, 0, 0.8, n=50))
    paths = write_report(tmp_path)
    md = paths["markdown"].read_text()
    assert "+0.0500 [0.0500, 0.0500] n=3" in md                            # ca − random = 0.05 on every seed
    assert "| full (100%, n=50) | 0.8000 |" in md
    assert "| headroom: full − random | +0.2500 (n=1) | +0.2000 (n=1) |" in md          # seed 0 only
    assert "<table>" in paths["html"].read_text() and paths["figure"].stat().st_size > 1000
    with pytest.raises(FileNotFoundError, match="results.csv"):
        write_report(tmp_path / "empty")


def test_headroom_is_full_against_random_per_seed_and_ratio():
    from coldseg.bench.stats import headroom_differences

    rows = [_row("random", ratio, seed, 0.6 + 0.01 * ratio + 0.01 * seed) for ratio in (5, 20) for seed in range(3)]
    rows += [_row("full", 100, seed, 0.9 + 0.01 * seed, n=50) for seed in (0, 1)]       # no seed 2
    rows += [_row("ca", 5, seed, 0.7) for seed in range(3)]
    got = {(d.ratio, d.metric): d for d in headroom_differences(rows)}
    assert {r for r, _ in got} == {5.0, 20.0} and {d.strategy for d in got.values()} == {"full"}
    d = got[(5.0, "dice")]
    assert d.seeds == [0, 1] and d.mean == pytest.approx(0.25) and d.lo == pytest.approx(0.25)
    assert got[(20.0, "dice")].mean == pytest.approx(0.10)
    assert headroom_differences([r for r in rows if r["strategy"] != "full"]) == []


@pytest.mark.slow
def test_tiny_sweep_with_worker_processes_and_overlap(tmp_path, monkeypatch):
    """The GPU code path on the CPU: worker processes for final trainings and iterative selections,
    and final trainings running beside the iterative rounds; same rows as the serial path."""
    import os

    import torch

    from coldseg.bench import sweep

    data = write_pairs(tmp_path / "data")
    monkeypatch.setattr(sweep._Ctx, "overlap", lambda self: True)
    # two seeds, so that each kind has two jobs and both the trainings and the iterative selections go to
    # the 2 worker processes (one job of a kind runs in this process, where a side thread would race the
    # main thread on torch's global generator: why overlap() is off there)
    cfg = tiny_config(data, tmp_path / "par", strategies=["random", "coreset-iter"], ratios=[50], seeds=[0, 1],
                      workers=2)
    run_benchmark(cfg, features_fn=fake_features)
    monkeypatch.undo()   # the serial reference without the side thread, which would race it in this process
    # ... and at the workers' thread count (cpu_count // workers): float sums round in another order
    # with another thread count, enough to move an iterative pick (the README says so)
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // 2))
    try:
        run_benchmark(tiny_config(data, tmp_path / "ser", strategies=["random", "coreset-iter"], ratios=[50],
                                  seeds=[0, 1]), features_fn=fake_features)
    finally:
        torch.set_num_threads(before)
    key = lambda r: (r["strategy"], r["ratio"], r["seed"])  # noqa: E731
    par = sorted(R.read_results(tmp_path / "par"), key=key)
    ser = sorted(R.read_results(tmp_path / "ser"), key=key)
    assert [key(r) for r in par] == [key(r) for r in ser] and len(par) == 6
    ids = lambda d: {(r["strategy"], r["ratio"], r["seed"]): r["ids"] for r in R.read_jsonl(d / R.RUNS)}  # noqa: E731
    assert ids(tmp_path / "par") == ids(tmp_path / "ser")              # same picks, wherever they ran
    for a, b in zip(par, ser):
        assert a["dice"] == pytest.approx(b["dice"], abs=1e-6)


@pytest.mark.slow
def test_real_chest_xray_sweep_with_moco_features(shared_data, tmp_path):
    """The default path on real pairs: MoCo features (1 epoch), a selector, an iterative baseline."""
    from coldseg.cli import main

    data = shared_data / "chest_xray_lungs"
    if not data.is_dir():
        pytest.skip(f"{data} not found")
    out = tmp_path / "out"
    assert main(["benchmark", str(data), "--strategies", "random,ca,bayesian", "--ratios", "30", "--seeds", "2",
                 "--out", str(out), "--tiny", "--steps", "20", "--device", "cpu", "--quiet"]) == 0
    rows = R.read_results(out)
    assert len(rows) == 3 * 2 + 2
    assert all(0 <= r["dice"] <= 1 and r["hd95"] >= 0 for r in rows)
    assert (out / "features" / "moco-backbone-seed1.npy").exists()   # the default: what `select` uses


@pytest.mark.filterwarnings("ignore:the trained features")   # a 1-epoch tiny MoCo has not learnt
def test_moco_backbone_features_are_the_same_training_embedded_before_the_head(tmp_path, monkeypatch, tiny_moco,
                                                                             one_torch_thread):
    import coldseg.features.train as T
    from coldseg.bench.sweep import BenchmarkConfig, _features_fn

    made, real = [], T.MocoConfig

    def tiny(**kw):   # the sweep's MoCo settings, on the tiny model
        made.append(real(**kw))
        return dataclasses.replace(tiny_moco, **kw)

    monkeypatch.setattr(T, "MocoConfig", tiny)
    images = np.random.default_rng(0).integers(0, 256, (16, 3, 32, 32), dtype=np.uint8)
    out = {}
    for kind in ("moco", "moco-backbone"):
        cfg = BenchmarkConfig(data_dir=tmp_path, out_dir=tmp_path / "o", strategies=["kmedian"], ratios=[10],
                              seeds=[0], image_size=32, features=kind, progress=False, device="cpu")
        out[kind] = _features_fn(cfg, tmp_path / "o")(images, 0)
    assert [c.feature_layer for c in made] == ["head", "backbone"]
    (head, s_head), (back, s_back) = out["moco"], out["moco-backbone"]
    assert head.shape == (16, tiny_moco.dim) and back.shape == (16, 8 * tiny_moco.width)   # ResNet-18: 8·width
    np.testing.assert_allclose(np.linalg.norm(back, axis=1), 1.0, rtol=1e-5)
    # one training (same seed and settings), two layers: the recorded confidence is identical
    np.testing.assert_array_equal(s_head["confidence"], s_back["confidence"])
    (entry,) = (tmp_path / "o" / "features" / "moco").iterdir()                 # one cached training
    assert sorted(p.name for p in entry.glob("features*.npy")) == ["features-head.npy", "features.npy"]


@pytest.mark.filterwarnings("ignore:the trained features")   # a 1-epoch tiny MoCo has not learnt
def test_encoders_train_side_by_side_in_worker_processes_on_a_cpu(tmp_path, monkeypatch):
    """workers > 1 on a CPU: the missing encoders train in worker processes before the selections; the
    parent only loads their cached features, which equal an in-process training with the same threads."""
    import os

    import torch

    from coldseg.bench import sweep
    from coldseg.bench.features import cached_features

    data = write_pairs(tmp_path / "data")
    out = tmp_path / "out"

    def not_here(cfg, folder):
        def refuse(images, seed):
            raise AssertionError(f"encoder {seed} was trained in the parent, not in a worker")
        return refuse

    monkeypatch.setattr(sweep, "_features_fn", not_here)          # the spawned workers import the real one
    cfg = tiny_config(data, out, strategies=["random", "kmedian"], ratios=[50], seeds=[0, 1, 2], workers=2,
                      features="moco-backbone", feature_seeds=2, ssl_epochs=1, ssl_batch_size=8, ssl_min_steps=0)
    run_benchmark(cfg)
    assert len(R.read_results(out)) == 2 * 3 + 3
    monkeypatch.undo()
    # the same training in this process, with the thread count a worker used, gives the same features
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // 2))
    from coldseg.data.pairs import load_pairs
    pairs = load_pairs(data, 32, progress=False)
    pool_idx, _ = sweep.evaluation_split(cfg, pairs.ids, pairs.groups)
    for f in (0, 1):
        here, _ = cached_features(sweep._features_fn(cfg, tmp_path / "again"), pairs.images[pool_idx], f,
                                  tmp_path / "again" / f"seed{f}.npy")
        np.testing.assert_array_equal(np.load(out / "features" / f"moco-backbone-seed{f}.npy"), here)


def test_draw_spread_recovers_hand_computed_components():
    from coldseg.bench.stats import draw_spread

    # additive table: draw effects ±1, seed effects 0/2, no residual -> sd_train 0, sd_draw from rows alone
    Y = np.array([[1.0, 3.0], [-1.0, 1.0], [1.0, 3.0], [-1.0, 1.0]]) + 10
    d = draw_spread(Y, n_boot=50)
    # row means 12/10/12/10 around 11: MS_draw = 2·4/3 = 8/3, MS_res = 0 -> var_draw = (8/3)/2 = 4/3
    assert d.sd_train == pytest.approx(0.0) and d.sd_draw == pytest.approx(math.sqrt(4 / 3))
    assert d.mean == pytest.approx(11.0) and d.p_draw == 0.0 and d.seed_means.tolist() == [10.0, 12.0]
    # pure noise: the draw component is small against the residual, and its F test does not fire
    rng = np.random.default_rng(0)
    noise = draw_spread(rng.normal(size=(40, 6)), n_boot=200)
    assert noise.sd_train == pytest.approx(1.0, abs=0.15) and noise.sd_draw < 0.35 and noise.p_draw > 0.01
    # a real set effect of sd 2 over noise of sd 1 is found, and its interval covers it
    big = draw_spread(rng.normal(0, 2, (40, 1)) + rng.normal(size=(40, 6)), n_boot=500)
    assert big.p_draw < 1e-6 and big.sd_draw_lo < 2.0 < big.sd_draw_hi and big.sd_draw_lo > 1.0
    with pytest.raises(ValueError, match="2 draws"):
        draw_spread(np.ones((1, 3)))
