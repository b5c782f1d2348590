"""coldseg.bench.target: issue 4's acceptance checks computed from a results folder."""
import json
import math

import pytest

from coldseg.bench.target import check_folder, markdown

HEADER = "dataset,strategy,ratio,n_labeled,seed,dice,hd95,train_seconds,device"


def _folder(tmp_path, dataset, gains, *, full=0.80, base=0.70, encoders=None, extra=()):
    """random at ``base``; strategy x at base + gains[ratio][seed]; full-label runs at ``full``."""
    rows = [HEADER]
    seeds = range(len(next(iter(gains.values()))))
    for ratio, g in gains.items():
        for seed in seeds:
            rows.append(f"{dataset},random,{ratio},4,{seed},{base},1,1,cpu")
            rows.append(f"{dataset},x,{ratio},4,{seed},{base + g[seed]},1,1,cpu")
    rows += [f"{dataset},full,100,40,{seed},{full},1,1,cpu" for seed in seeds]
    rows += list(extra)
    (tmp_path / "results.csv").write_text("\n".join(rows) + "\n")
    settings = {"image_size": 64, **({"feature_seeds": encoders} if encoders else {})}
    (tmp_path / "settings.json").write_text(json.dumps({"settings": settings, "sessions": []}))
    return tmp_path


def test_gain_is_mean_over_ratios_then_seeds_in_points(tmp_path):
    gains = {5: [0.02, 0.00, 0.01], 10: [0.02, 0.02, 0.02], 20: [0.02, 0.01, 0.00]}
    c = check_folder(_folder(tmp_path, "kvasir_seg", gains), "x")
    # per seed: (2+2+2)/3 = 2, (0+2+1)/3 = 1, (1+2+0)/3 = 1 -> mean 4/3 points
    assert c.gain == pytest.approx(4 / 3)
    assert c.gain_lo < c.gain < c.gain_hi
    assert c.seeds == [0, 1, 2] and c.dataset == "kvasir_seg" and c.image_size == 64
    assert c.gain_met is True and c.below == [] and c.full_met is None   # full target: isic only
    assert c.per_ratio["10"][0] == pytest.approx(2.0) and c.per_ratio["10"][3] == 3


def test_a_ratio_resolvably_below_random_fails_never_below(tmp_path):
    gains = {5: [0.01, 0.02, 0.00], 10: [0.0, 0.01, -0.01], 20: [-0.03, -0.031, -0.029]}
    c = check_folder(_folder(tmp_path, "mass_roads", gains), "x")
    assert c.below == [20.0]
    assert c.gain_met is None                           # gain target names isic2017 and kvasir_seg only
    assert c.as_dict()["never_below"] is False
    assert "20%" in markdown([c]).splitlines()[-1]


def test_full_fraction_at_20_percent_on_isic(tmp_path):
    gains = {5: [0.0, 0.0], 10: [0.0, 0.0], 20: [0.09, 0.09]}    # 0.79 vs full 0.80
    c = check_folder(_folder(tmp_path, "isic2017", gains), "x")
    assert c.full_fraction == pytest.approx(0.79 / 0.80)
    assert c.full_met is True
    c = check_folder(_folder(tmp_path, "isic2017", {5: [0, 0], 10: [0, 0], 20: [0.05, 0.05]}), "x")
    assert c.full_fraction == pytest.approx(0.75 / 0.80) and c.full_met is False


def test_encoder_interval_is_over_encoders_and_wider(tmp_path):
    g = [0.01, 0.03, 0.012, 0.028]                       # seeds 0, 2 on encoder 0; 1, 3 on encoder 1
    c = check_folder(_folder(tmp_path, "kvasir_seg", {5: g, 10: g, 20: g}, encoders=2), "x")
    assert c.encoders == 2
    assert c.gain_enc_hi - c.gain_enc_lo > c.gain_hi - c.gain_lo
    assert "(2)" in markdown([c])


def test_seeds_missing_a_ratio_are_left_out_of_the_gain(tmp_path):
    gains = {5: [0.01, 0.01], 10: [0.01, 0.01]}
    extra = ["kvasir_seg,random,20,4,0,0.7,1,1,cpu", "kvasir_seg,x,20,4,0,0.72,1,1,cpu"]
    c = check_folder(_folder(tmp_path, "kvasir_seg", gains, extra=extra), "x")
    assert c.seeds == [0]
    assert math.isnan(c.gain_lo) and c.gain == pytest.approx((1 + 1 + 2) / 3)


def test_no_seed_with_every_ratio_says_so(tmp_path):
    c = check_folder(_folder(tmp_path, "kvasir_seg", {10: [0.01, 0.02], 20: [0.01, 0.02]}), "x")
    assert c.seeds == [] and c.gain_met is None
    assert "no seed ran 5, 10, 20 % for both" in markdown([c])
    assert c.per_ratio["10"][0] == pytest.approx(1.5)


def test_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="no benchmark results.*coldseg benchmark --out"):
        check_folder(tmp_path, "x")
    _folder(tmp_path, "kvasir_seg", {5: [0.0, 0.0]})
    with pytest.raises(ValueError, match="no runs of 'kmedian'.*random"):
        check_folder(tmp_path, "kmedian")


def test_script_prints_a_table_and_json(tmp_path, capsys):
    import runpy
    import sys
    from pathlib import Path

    folder = _folder(tmp_path, "kvasir_seg", {5: [0.01, 0.02], 10: [0.01, 0.02], 20: [0.01, 0.02]})
    script = str(Path(__file__).parents[1] / "scripts" / "target_check.py")
    old = sys.argv
    try:
        sys.argv = [script, str(folder), "--strategy", "x", "--json"]
        with pytest.raises(SystemExit) as e:
            runpy.run_path(script, run_name="__main__")
    finally:
        sys.argv = old
    assert e.value.code == 0
    rec = json.loads(capsys.readouterr().out.splitlines()[0])
    assert rec["gain"] == pytest.approx(1.5) and rec["gain_met"] is True and rec["never_below"] is True


def test_script_takes_several_strategies(tmp_path, capsys):
    import runpy
    import sys
    from pathlib import Path

    g = {5: [0.01, 0.02], 10: [0.01, 0.02], 20: [0.01, 0.02]}
    extra = [f"kvasir_seg,y,{r},4,{s},0.69,1,1,cpu" for r in g for s in (0, 1)]
    folder = _folder(tmp_path, "kvasir_seg", g, extra=extra)
    script = str(Path(__file__).parents[1] / "scripts" / "target_check.py")
    old = sys.argv
    try:
        sys.argv = [script, str(folder), "--strategy", "x,y,absent", "--json"]
        with pytest.raises(SystemExit) as e:
            runpy.run_path(script, run_name="__main__")
    finally:
        sys.argv = old
    assert e.value.code == 0
    out = capsys.readouterr()
    recs = [json.loads(line) for line in out.out.splitlines()]
    assert [r["strategy"] for r in recs] == ["x", "y"]
    assert recs[0]["gain"] == pytest.approx(1.5) and recs[1]["gain"] == pytest.approx(-1.0)
    assert "no runs of 'absent'" in out.err


def test_forest_plot_has_a_panel_per_dataset(tmp_path):
    from PIL import Image

    from coldseg.bench.target import plot_checks

    g = {5: [0.01, 0.02, 0.0], 10: [-0.03, -0.031, -0.029], 20: [0.01, 0.02, 0.0]}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = check_folder(_folder(tmp_path / "a", "kvasir_seg", g), "x")
    b = check_folder(_folder(tmp_path / "b", "mass_roads", g), "x")
    assert a.below == [10.0]
    path = plot_checks(tmp_path / "out" / "forest.png", [a, b])
    with Image.open(path) as im:
        w, h = im.size
    one = plot_checks(tmp_path / "one.png", [a])
    with Image.open(one) as im:
        assert im.size[0] < w and h > 100          # two panels are wider than one


def test_forest_plot_marks_a_strategy_not_run_on_a_dataset(tmp_path):
    from coldseg.bench.target import not_run, plot_checks

    g = {5: [0.01, 0.02, 0.0], 10: [0.01, 0.0, 0.02], 20: [0.01, 0.02, 0.0]}
    for name in "ab":
        (tmp_path / name).mkdir()
    extra = [f"kvasir_seg,y,{r},4,{seed},0.7,1,1,cpu" for r in g for seed in range(3)]
    a_x = check_folder(_folder(tmp_path / "a", "kvasir_seg", g, extra=extra), "x")
    a_y = check_folder(tmp_path / "a", "y")
    b_x = check_folder(_folder(tmp_path / "b", "mass_roads", g), "x")
    assert not_run([a_x, a_y], ["x", "y"]) == []
    assert not_run([b_x], ["x", "y"]) == ["y"]
    assert plot_checks(tmp_path / "f.png", [a_x, b_x, a_y]).stat().st_size > 0


def test_headroom_is_full_minus_random_per_seed(tmp_path):
    from coldseg.bench.target import headroom

    gains = {5: [0.0, 0.0, 0.0], 10: [0.0, 0.0, 0.0], 20: [0.0, 0.0, 0.0]}
    c = check_folder(_folder(tmp_path, "isic2017", gains, full=0.80, base=0.77), "x")
    assert c.headroom == pytest.approx(3.0)                  # (0.80 - 0.77) x 100, every seed
    assert "+3.00" in markdown([c]).splitlines()[-1]
    # random differs per ratio and seed; a seed without a full-label run is left out
    cell = {("random", 5.0, 0): 0.70, ("random", 10.0, 0): 0.74, ("random", 20.0, 0): 0.78,
            ("random", 5.0, 1): 0.72, ("random", 10.0, 1): 0.76, ("random", 20.0, 1): 0.80,
            ("random", 5.0, 2): 0.10, ("random", 10.0, 2): 0.10, ("random", 20.0, 2): 0.10,
            ("full", 100.0, 0): 0.80, ("full", 100.0, 1): 0.80}
    rows = [{"strategy": st, "ratio": r, "seed": s, "dice": v} for (st, r, s), v in cell.items()]
    mean, lo, hi, n = headroom(rows, [5.0, 10.0, 20.0])
    assert n == 2 and mean == pytest.approx((0.06 + 0.04) / 2) and lo < mean < hi
    assert math.isnan(headroom(rows[:1], [5.0])[0])                       # no full-label run


def test_draw_spread_script_splits_sets_from_training_and_places_a_strategy(tmp_path, capsys):
    """scripts/draw_spread.py on a hand-made folder: draw effects ±1 point, seed effects 0/2, no
    residual -> sd_draw sqrt(4/3) at each ratio; strategy x sits 3 points above the average draw."""
    import runpy
    import sys
    from pathlib import Path

    rows = [HEADER]
    for ratio in (5, 10):
        for j, a in zip((1, 2, 3, 4), (1, -1, 1, -1)):
            rows += [f"k,random[draw={j}],{ratio},4,{s},{(70 + a + b) / 100},1,1,cpu" for s, b in ((0, 0), (1, 2))]
        rows += [f"k,x,{ratio},4,{s},{(73 + b) / 100},1,1,cpu" for s, b in ((0, 0), (1, 2))]
        rows += [f"k,random,{ratio},4,{s},{(69 + b) / 100},1,1,cpu" for s, b in ((0, 0), (1, 2))]
        rows.append(f"k,random[draw=5],{ratio},4,0,0.5,1,1,cpu")   # a draw still running: left out
    (tmp_path / "results.csv").write_text("\n".join(rows) + "\n")
    script = str(Path(__file__).parents[1] / "scripts" / "draw_spread.py")
    old = sys.argv
    try:
        sys.argv = [script, str(tmp_path), "--compare", f"{tmp_path}:x", "--figure", str(tmp_path / "d.png")]
        with pytest.raises(SystemExit) as e:
            runpy.run_path(script, run_name="__main__")
    finally:
        sys.argv = old
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "4 fixed draws [1, 2, 3, 4] × U-Net seeds [0, 1]" in out
    assert f"| 5 % | 71.00 | {math.sqrt(4 / 3):.2f} [" in out and "| mean of 5/10 % | 71.00 |" in out
    assert "| 0.00 | 0 |" in out                           # sd_train 0, draw effect certain
    assert "| mean | 2 | +3.00 [+3.00, +3.00] | +2.6 |" in out   # x: 3 points = 2.6 sd_draw
    assert "| mean | 2 | -1.00 [-1.00, -1.00] |" in out          # plain random's rows, 1 below the draws here
    assert (tmp_path / "d.png").stat().st_size > 10_000
    sys.argv = [script, str(tmp_path), "--compare", f"{tmp_path}:absent"]
    try:
        with pytest.raises(SystemExit, match="has no `absent` runs with U-Net seeds"):
            runpy.run_path(script, run_name="__main__")
    finally:
        sys.argv = old


def test_pass_and_below_probabilities_match_a_simulation_of_the_check():
    """The closed forms against the check itself, run on 200,000 simulated 5-seed experiments."""
    import numpy as np
    from scipy.stats import t

    from coldseg.bench.stats import below_probability, pass_probability, seeds_needed

    n, sd = 5, 1.4
    rng = np.random.default_rng(0)
    for g in (0.0, 0.6, 1.0, 1.8):
        d = rng.normal(g, sd, (200_000, n))                                   # (reps, n) per-seed gains
        mean, half = d.mean(axis=1), t.ppf(0.975, n - 1) * d.std(axis=1, ddof=1) / math.sqrt(n)
        assert pass_probability(g, 1.0, sd, n) == pytest.approx((mean >= 1.0).mean(), abs=0.004)
        assert below_probability(-g, sd, n) == pytest.approx((-mean + half < 0).mean(), abs=0.004)
    assert pass_probability(1.0, 1.0, 0.3, 7) == pytest.approx(0.5)           # a true +1.0 passes half the time
    for n_, sd_ in ((3, 0.5), (5, 2.0), (12, 1.0)):
        assert below_probability(0.0, sd_, n_) == pytest.approx(0.025, abs=2e-4)
    assert below_probability(3.0, 0.6, 5) < 1e-9 and below_probability(-3.0, 0.6, 5) > 1 - 1e-6   # no nan far out
    k = seeds_needed(1.5, 1.0, 1.43)                                          # ceil((0.8416 * 1.43 / 0.5)^2) = 6
    assert k == 6 and pass_probability(1.5, 1.0, 1.43, k) >= 0.8 > pass_probability(1.5, 1.0, 1.43, k - 1)
    assert seeds_needed(1.0, 1.0, 1.0) is None and seeds_needed(0.2, 1.0, 1.0) is None
    with pytest.raises(ValueError, match="sd > 0"):
        pass_probability(1.0, 1.0, 0.0, 5)
    with pytest.raises(ValueError, match="n >= 2"):
        below_probability(0.0, 1.0, 1)


def test_target_power_script_reads_a_measured_folder_and_a_draw_floor(tmp_path, capsys):
    """scripts/target_power.py: per-seed gains 0, 2, 1, 1 (sd sqrt(2/3)) place a true +1.0 at one half;
    fixed draws ±1 point with no training noise give a floor of sqrt(4/3)."""
    import runpy
    import sys
    from pathlib import Path

    (tmp_path / "m").mkdir()
    measured = _folder(tmp_path / "m", "kvasir_seg", {r: [0.00, 0.02, 0.01, 0.01] for r in (5, 10, 20)})
    draws = tmp_path / "d"
    draws.mkdir()
    rows = [HEADER]
    for ratio in (5, 10, 20):
        for j, a in zip((1, 2, 3, 4), (1, -1, 1, -1)):
            rows += [f"k,random[draw={j}],{ratio},4,{s},{(70 + a + b) / 100},1,1,cpu" for s, b in ((0, 0), (1, 2))]
    (draws / "results.csv").write_text("\n".join(rows) + "\n")
    script = str(Path(__file__).parents[1] / "scripts" / "target_power.py")
    old = sys.argv
    try:
        sys.argv = [script, f"{measured}:x", "--draws", str(draws), "--gains", "0,1,2", "--boot", "2000"]
        with pytest.raises(SystemExit) as e:
            runpy.run_path(script, run_name="__main__")
        assert e.value.code == 0
        out = capsys.readouterr().out
        assert f"measured gain +1.00, sd of the per-seed gain {math.sqrt(2 / 3):.2f}" in out
        assert "| +1.00 | 0.50 [" in out                      # a true +1.0 passes half the time
        assert f"per-seed gain ≥ {math.sqrt(4 / 3):.2f}" in out
        assert "with probability 0.32 (each cell 0.025" in out
        sys.argv = [script, f"{measured}:absent"]
        with pytest.raises(SystemExit, match="has 0 seeds where `absent` and random both ran"):
            runpy.run_path(script, run_name="__main__")
        (tmp_path / "flat").mkdir()
        flat = _folder(tmp_path / "flat", "kvasir_seg", {r: [0.01, 0.01, 0.01] for r in (5, 10, 20)})
        sys.argv = [script, f"{flat}:x"]
        with pytest.raises(SystemExit, match=r"same value on every seed at some ratio \(sd 0\)"):
            runpy.run_path(script, run_name="__main__")
        sys.argv = [script, f"{measured}:x", "--power", "1.5"]
        with pytest.raises(SystemExit) as e:
            runpy.run_path(script, run_name="__main__")
        assert e.value.code == 2 and "--power 1.5 must lie strictly between 0 and 1" in capsys.readouterr().err
    finally:
        sys.argv = old
