"""Benchmark options for design work: a validation split that never reads the test set, and
selector specs with parameters (``name[key=value]``) in a sweep."""
import numpy as np
import pytest

from coldseg.bench import results as R
from coldseg.bench.sweep import BenchmarkConfig, evaluation_split, strategy_kinds
from coldseg.data.splits import pool_test_split

from test_bench import fake_features, tiny_config, write_pairs


def _cfg(**kw):
    return BenchmarkConfig(data_dir=".", out_dir=".", strategies=["random"], ratios=[10], seeds=[0], **kw)


@pytest.mark.parametrize("groups", [None, [f"g{i // 3}" for i in range(60)]])
def test_validation_split_stays_inside_the_pool(groups):
    ids = [f"im{i}" for i in range(60)]
    pool, test = pool_test_split(ids, groups, test_fraction=0.2, seed=7)
    inner, val = evaluation_split(_cfg(evaluate_on="validation", split_seed=7), ids, groups)
    assert set(inner) | set(val) == set(pool)                  # a partition of the pool ...
    assert not set(inner) & set(val) and not (set(val) | set(inner)) & set(test)   # ... never the test set
    assert len(val) == pytest.approx(0.2 * len(pool), abs=3)
    if groups is not None:                                     # whole source groups on one side
        assert not {groups[i] for i in inner} & {groups[i] for i in val}
    same_pool, same_test = evaluation_split(_cfg(split_seed=7), ids, groups)
    assert same_pool.tolist() == pool.tolist() and same_test.tolist() == test.tolist()


def test_bad_evaluate_on_is_named(tmp_path):
    from coldseg.bench.sweep import validate

    with pytest.raises(ValueError, match="evaluate_on='train'"):
        validate(_cfg(evaluate_on="train"))


def test_specs_are_selectors_and_bad_parameters_fail_early():
    assert strategy_kinds(["random", "ca-typical[beta=0]"]) == {"random": "selector",
                                                                  "ca-typical[beta=0]": "selector"}
    with pytest.raises(ValueError, match="accepts"):
        strategy_kinds(["ca-typical[gamma=1]"])
    with pytest.raises(ValueError, match="unknown strategy"):
        strategy_kinds(["nope[beta=0]"])


def test_tiny_validation_sweep_with_a_spec(tmp_path):
    from coldseg.bench.sweep import run_benchmark

    data = write_pairs(tmp_path / "data")
    out = tmp_path / "out"
    cfg = tiny_config(data, out, strategies=["random", "ca-typical[beta=0]"], ratios=[50], seeds=[0],
                      evaluate_on="validation", include_full=False)
    run_benchmark(cfg, features_fn=fake_features)
    rows = R.read_results(out)
    assert sorted(r["strategy"] for r in rows) == ["ca-typical[beta=0]", "random"]
    assert all(0.0 <= float(r["dice"]) <= 1.0 for r in rows)
    assert '"evaluate_on": "validation"' in (out / "settings.json").read_text()
    # a test-split run into the same folder is refused: the settings differ
    with pytest.raises(ValueError):
        run_benchmark(tiny_config(data, out, strategies=["random"], ratios=[50], seeds=[0],
                                  include_full=False), features_fn=fake_features)


def test_feature_seeds_reuse_encoders_and_are_recorded(tmp_path):
    """--feature-seeds F: F feature trainings only; seed s selects from encoder s % F, while the
    selection, the random draw and the U-Net still follow s; the folder records F."""
    from coldseg.bench.sweep import feature_seed, run_benchmark

    assert [feature_seed(_cfg(feature_seeds=2), s) for s in range(5)] == [0, 1, 0, 1, 0]
    assert [feature_seed(_cfg(), s) for s in range(3)] == [0, 1, 2]
    data = write_pairs(tmp_path / "data")
    out = tmp_path / "out"
    asked = []

    def counting(images, seed):
        asked.append(seed)
        return fake_features(images, seed)

    cfg = tiny_config(data, out, strategies=["random", "ca"], ratios=[50], seeds=[0, 1, 2, 3],
                      feature_seeds=2, include_full=False)
    run_benchmark(cfg, features_fn=counting)
    assert sorted(asked) == [0, 1]                                  # two encoders for four seeds
    assert sorted(p.name for p in (out / "features").glob("*.npy")) == ["fake-seed0.npy", "fake-seed1.npy"]
    rows = R.read_results(out)
    assert sorted((r["strategy"], int(r["seed"])) for r in rows) == [
        (s, k) for s in ("ca", "random") for k in range(4)]
    runs = {(r["strategy"], r["seed"]): r["ids"] for r in R.read_jsonl(out / "runs.jsonl")}
    assert runs[("random", 0)] != runs[("random", 2)]               # the draw follows the seed
    assert '"feature_seeds": 2' in (out / "settings.json").read_text()
    with pytest.raises(ValueError):                                 # a folder never mixes the two
        run_benchmark(tiny_config(data, out, strategies=["random", "ca"], ratios=[50], seeds=[0],
                                  include_full=False), features_fn=counting)
    with pytest.raises(ValueError, match="feature_seeds=0"):
        run_benchmark(tiny_config(data, tmp_path / "o2", feature_seeds=0), features_fn=counting)


def test_feature_seed_offset_trains_a_new_set_of_encoders_and_is_recorded(tmp_path):
    """--feature-seed-offset N: seed s selects from encoder N + s % F (files and MoCo seeds N..N+F-1);
    recorded only when N > 0, so older folders still match; readers of the features follow it."""
    from coldseg.bench.causes import load_folder
    from coldseg.bench.sweep import feature_seed, run_benchmark

    assert [feature_seed(_cfg(feature_seeds=2, feature_seed_offset=3), s) for s in range(4)] == [3, 4, 3, 4]
    assert [feature_seed(_cfg(feature_seed_offset=5), s) for s in range(2)] == [5, 6]
    data = write_pairs(tmp_path / "data")
    out, asked = tmp_path / "out", []

    def counting(images, seed):
        asked.append(seed)
        return fake_features(images, seed)

    cfg = tiny_config(data, out, strategies=["random", "ca"], ratios=[50], seeds=[0, 1, 2],
                      feature_seeds=2, feature_seed_offset=3, include_full=False)
    run_benchmark(cfg, features_fn=counting)
    assert sorted(asked) == [3, 4]
    assert sorted(p.name for p in (out / "features").glob("*.npy")) == ["fake-seed3.npy", "fake-seed4.npy"]
    assert R.read_settings(out)["settings"]["feature_seed_offset"] == 3
    runs, _, features_of, _, _ = load_folder(out)
    np.testing.assert_array_equal(features_of(2), np.load(out / "features" / "fake-seed3.npy"))
    plain = tiny_config(data, tmp_path / "o0", strategies=["random"], ratios=[50], seeds=[0], include_full=False)
    run_benchmark(plain, features_fn=counting)
    assert "feature_seed_offset" not in R.read_settings(tmp_path / "o0")["settings"]
    with pytest.raises(ValueError):                                 # a folder never mixes two encoder sets
        run_benchmark(tiny_config(data, out, strategies=["random", "ca"], ratios=[50], seeds=[0],
                                  feature_seeds=2, include_full=False), features_fn=counting)
    with pytest.raises(ValueError, match="feature_seed_offset=-1"):
        run_benchmark(tiny_config(data, tmp_path / "o2", feature_seed_offset=-1), features_fn=counting)


def test_ablation_table_groups_seeds_by_encoder(tmp_path, monkeypatch, capsys):
    """scripts/ablation_table.py: paired differences per ratio; with feature_seeds recorded, one more
    column whose interval is over encoders (per-encoder means of the per-seed differences)."""
    import json
    import runpy
    import sys
    from pathlib import Path

    rows = ["dataset,strategy,ratio,n_labeled,seed,dice,hd95,train_seconds,device"]
    gain = {0: 0.01, 1: 0.03, 2: 0.01, 3: 0.03}                     # encoder 0: +1 point, encoder 1: +3
    for seed in range(4):
        for ratio in (5, 10):
            rows.append(f"d,random,{ratio},4,{seed},0.5,1,1,cpu")
            rows.append(f"d,x,{ratio},4,{seed},{0.5 + gain[seed]},1,1,cpu")
    (tmp_path / "results.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "settings.json").write_text(json.dumps({"settings": {"feature_seeds": 2}}))
    monkeypatch.setattr(sys, "argv", ["ablation_table.py", str(tmp_path), "--ratios", "5,10"])
    runpy.run_path(str(Path(__file__).parents[1] / "scripts" / "ablation_table.py"), run_name="__main__")
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("| `x`"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[1].startswith("+2.00 [") and cells[1].endswith("n=4")   # 5 %: mean of 1, 3, 1, 3
    assert cells[3].startswith("+2.00 [") and cells[3].endswith("n=4")   # over seeds
    assert cells[4].startswith("+2.00 [") and cells[4].endswith("n=2 (+1.00, +3.00)")   # over the 2 encoders,
    #                                                                   then each encoder's own mean
    lo4, lo2 = (float(c.split("[")[1].split(",")[0]) for c in (cells[3], cells[4]))
    assert lo2 < lo4                                                     # fewer units, wider interval


def _run_script(rel, argv, monkeypatch):
    import runpy
    import sys
    from pathlib import Path

    monkeypatch.setattr(sys, "argv", [rel] + [str(a) for a in argv])
    runpy.run_path(str(Path(__file__).parents[1] / rel), run_name="__main__")


def test_eval_noise_script_prints_each_training_and_a_summary(tmp_path, monkeypatch, capsys):
    import json

    data = write_pairs(tmp_path / "data", n=30)
    ids = sorted(p.stem for p in (data / "images").glob("*.png"))
    from coldseg.data.pairs import load_pairs

    pool, _ = evaluation_split(_cfg(evaluate_on="validation"), load_pairs(data, 32, progress=False).ids, None)
    feats = tmp_path / "f.npy"
    np.save(feats, np.random.default_rng(0).normal(size=(len(pool), 4)).astype(np.float32))
    _run_script("benchmarks/eval_noise.py", [data, "--image-size", "32", "--steps", "2", "--channels", "8,16,32",
                                             "--ratio", "50", "--repeats", "2", "--draws", "2",
                                             "--features", feats, "--strategy", "kmedian", "--device", "cpu"],
                monkeypatch)
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["kind"] for x in lines] == ["init", "init", "draw", "draw", "full", "full", "summary"]
    summary = lines[-1]
    assert summary["fixed"] == "kmedian" and summary["n_pool"] == len(pool) and len(ids) == 30
    assert summary["init_mean"] == pytest.approx(np.mean([x["dice_points"] for x in lines[:2]]), abs=0.01)
    assert all(0 <= x["dice_points"] <= 100 for x in lines[:-1])
    assert lines[0]["n_labeled"] == lines[2]["n_labeled"] < lines[4]["n_labeled"] == len(pool)


def test_pick_density_script_puts_random_in_the_middle(tmp_path, monkeypatch, capsys):
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(0, 0.05, (150, 3)), rng.normal(0, 1.0, (50, 3))]) + [5, 0, 0]
    np.save(tmp_path / "a.npy", X.astype(np.float32))
    _run_script("scripts/pick_density.py", [tmp_path / "a.npy", "--strategies", "random,kcenter,kmedian",
                                            "--ratios", "10"], monkeypatch)
    rows = {line.split("`")[1]: line for line in capsys.readouterr().out.splitlines() if line.startswith("| `")}
    rank = {k: float(v.split("|")[2].split()[0]) for k, v in rows.items()}
    cover = {k: float(v.split("|")[2].split("/")[-1]) for k, v in rows.items()}
    assert set(rank) == {"random", "kcenter", "kmedian"}
    assert rank["kcenter"] < 0.25 and rank["random"] > 0.3         # farthest-first picks the sparse fringe
    assert cover["kmedian"] < cover["random"]                       # K-median minimises the cover


def test_a_second_benchmark_on_a_busy_folder_is_refused(tmp_path):
    """Two invocations on one folder would redo each other's runs: the second stops at once, naming the
    holder, and the folder works again once the first is done."""
    import os

    from coldseg.bench.sweep import run_benchmark
    from coldseg.io.lock import FolderBusy, folder_lock

    data = write_pairs(tmp_path / "data")
    out = tmp_path / "out"
    out.mkdir()
    cfg = tiny_config(data, out, strategies=["random"], ratios=[50], seeds=[0], include_full=False)
    with folder_lock(out, wait=False):
        with pytest.raises(FolderBusy, match=f"another coldseg benchmark is writing .*pid {os.getpid()}"):
            run_benchmark(cfg, features_fn=fake_features)
    assert not (out / "results.csv").exists()
    run_benchmark(cfg, features_fn=fake_features)
    assert len(R.read_results(out)) == 1


def test_cli_reports_a_busy_folder_in_one_line(tmp_path, capsys):
    from coldseg.cli import main
    from coldseg.io.lock import folder_lock

    data = write_pairs(tmp_path / "data")
    out = tmp_path / "out"
    out.mkdir()
    with folder_lock(out, wait=False):
        code = main(["benchmark", str(data), "--out", str(out), "--strategies", "random", "--ratios", "50",
                     "--seeds", "1", "--tiny", "--features", "pixels", "--quiet", "--no-full", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "another coldseg benchmark is writing" in err and "Traceback" not in err


def test_records_copied_without_their_results_are_named(tmp_path):
    """Rows copied into runs.jsonl alone do not count as done (results.csv decides): the sweep says so."""
    import shutil
    import warnings

    from coldseg.bench.sweep import run_benchmark

    data = write_pairs(tmp_path / "data")
    src, dst = tmp_path / "src", tmp_path / "dst"
    cfg = dict(strategies=["random"], ratios=[50], seeds=[0, 1], include_full=False)
    run_benchmark(tiny_config(data, src, **cfg), features_fn=fake_features)
    dst.mkdir()
    for f in (R.RUNS, "settings.json"):
        shutil.copy(src / f, dst / f)
    assert len(R.records_without_result(dst)) == 2
    with pytest.warns(UserWarning, match="2 planned runs already have a record"):
        run_benchmark(tiny_config(data, dst, **cfg), features_fn=fake_features)
    assert R.records_without_result(dst) == set()
    # with both files copied nothing runs again and nothing is said
    other = tmp_path / "both"
    shutil.copytree(src, other)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert run_benchmark(tiny_config(data, other, **cfg), features_fn=fake_features).new_runs == 0


def test_copy_rows_starts_a_folder_that_resumes_without_retraining_random(tmp_path, monkeypatch, capsys):
    """scripts/copy_rows.py: the feature-free rows of one folder seed another whose features differ;
    the benchmark then adds only the missing strategy's runs, and refuses an existing destination."""
    from coldseg.bench.sweep import run_benchmark

    data = write_pairs(tmp_path / "data")
    src, dst = tmp_path / "src", tmp_path / "dst"
    run_benchmark(tiny_config(data, src, strategies=["random", "ca"], ratios=[50], seeds=[0, 1],
                              include_full=False), features_fn=fake_features)
    _run_script("scripts/copy_rows.py", [src, dst, "--set", "features=fake2"], monkeypatch)
    assert "2 rows copied" in capsys.readouterr().out
    copied = R.read_results(dst)
    assert sorted((r["strategy"], int(r["seed"])) for r in copied) == [("random", 0), ("random", 1)]
    assert len(R.read_jsonl(dst / "runs.jsonl")) == 2
    lines = (dst / "results.csv").read_bytes().splitlines(keepends=True)
    assert len(lines) == 3 and all(x.endswith(b"\r\n") for x in lines)   # the benchmark's own line ends
    asked = []

    def counting(images, seed):
        asked.append(seed)
        return fake_features(images, seed)

    res = run_benchmark(tiny_config(data, dst, strategies=["random", "ca"], ratios=[50], seeds=[0, 1],
                                    include_full=False, features="fake2"), features_fn=counting)
    rows = R.read_results(dst)
    assert sorted((r["strategy"], int(r["seed"])) for r in rows) == [
        (s, k) for s in ("ca", "random") for k in range(2)]
    same = {(r["strategy"], r["seed"]): r["dice"] for r in R.read_results(src) if r["strategy"] == "random"}
    assert {(r["strategy"], r["seed"]): r["dice"] for r in rows if r["strategy"] == "random"} == same
    assert sorted(asked) == [0, 1] and res is not None          # features trained for ca only
    with pytest.raises(SystemExit, match="exists"):
        _run_script("scripts/copy_rows.py", [src, dst], monkeypatch)
    with pytest.raises(SystemExit, match="not a top-level setting"):
        _run_script("scripts/copy_rows.py", [src, tmp_path / "d3", "--set", "nope=1"], monkeypatch)
    assert not (tmp_path / "d3").exists()
    with pytest.raises(SystemExit, match="already has it"):
        _run_script("scripts/copy_rows.py", [src, tmp_path / "d3", "--add", "features=x"], monkeypatch)
    assert not (tmp_path / "d3").exists()
    # --add: a setting recorded only when not the default (e.g. ssl_candidates) enters DST's settings
    _run_script("scripts/copy_rows.py", [src, tmp_path / "d4", "--add", "ssl_candidates=none"], monkeypatch)
    assert R.read_settings(tmp_path / "d4")["settings"]["ssl_candidates"] == "none"
    # --drop: a setting DST's features do not record (the MoCo schedule beside --set features=pixels)
    assert "ssl_epochs" in R.read_settings(src)["settings"]
    _run_script("scripts/copy_rows.py", [src, tmp_path / "d5", "--drop", "ssl_epochs"], monkeypatch)
    assert "ssl_epochs" not in R.read_settings(tmp_path / "d5")["settings"]
    with pytest.raises(SystemExit, match="--drop nope: not a top-level setting"):
        _run_script("scripts/copy_rows.py", [src, tmp_path / "d6", "--drop", "nope"], monkeypatch)
    assert not (tmp_path / "d6").exists()


def test_pick_overlap_script_matches_runs_by_ratio_and_seed(tmp_path, capsys):
    """scripts/pick_overlap.py: share of A's picks B also has, only for (ratio, seed) both ran."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    for rec in [{"strategy": "kmedian", "ratio": 10.0, "seed": 0, "ids": ["x1", "x2", "x3", "x4"]},
                {"strategy": "kmedian", "ratio": 10.0, "seed": 1, "ids": ["y1", "y2"]},
                {"strategy": "random", "ratio": 10.0, "seed": 0, "ids": ["x1", "x2", "x3", "x4"]}]:
        R.append_run_record(a, rec)
    for rec in [{"strategy": "kmedian", "ratio": 10, "seed": 0, "ids": ["x1", "x9", "x3", "x8"]},
                {"strategy": "kmedian", "ratio": 20.0, "seed": 1, "ids": ["y1", "y2"]},
                {"strategy": "random", "ratio": 10.0, "seed": 0, "ids": ["z1", "z2", "z3", "z4"]}]:
        R.append_run_record(b, rec)
    import runpy
    from pathlib import Path

    mod = runpy.run_path(str(Path(__file__).parents[1] / "scripts" / "pick_overlap.py"))
    assert mod["main"]([str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "| 10% | 1 | 50.0 % | 50 % | 50 % |" in out          # seed 1 ran at different ratios
    assert "| all | 1 | 50.0 % |" in out
    assert mod["main"]([str(a), str(b), "--strategy", "random"]) == 0
    assert "| all | 1 | 0.0 % |" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="no `ca` run"):
        mod["main"]([str(a), str(b), "--strategy", "ca"])
    with pytest.raises(SystemExit, match="does not exist"):
        mod["main"]([str(tmp_path / "nope"), str(b)])


def test_name_order_bias_script_ranks_picks_in_the_full_runs_pool(tmp_path, capsys):
    """scripts/name_order_bias.py: mean normalised name rank and share among the first names."""
    import runpy
    from pathlib import Path

    pool = [f"img{i:02d}" for i in range(11)]                        # ranks 0.0, 0.1, ..., 1.0
    for rec in [{"strategy": "full", "ratio": 100.0, "seed": 0, "ids": pool},
                {"strategy": "probcover", "ratio": 10.0, "seed": 0, "ids": ["img00", "img01"]},
                {"strategy": "probcover", "ratio": 10.0, "seed": 1, "ids": ["img00", "img10"]},
                {"strategy": "random", "ratio": 10.0, "seed": 0, "ids": ["img05"]}]:
        R.append_run_record(tmp_path, rec)
    mod = runpy.run_path(str(Path(__file__).parents[1] / "scripts" / "name_order_bias.py"))
    assert mod["main"]([str(tmp_path), "--first", "0.15"]) == 0
    out = capsys.readouterr().out
    # probcover: ranks (0, 0.1) and (0, 1): means 0.05 and 0.5 -> 0.275; shares 1.0 and 0.5 -> 75 %
    assert f"| {tmp_path.name} | `probcover` | 2 | 0.275 | 75.0% |" in out
    assert f"| {tmp_path.name} | `random` | 1 | 0.500 | 0.0% |" in out
    assert "`full`" not in out
    with pytest.raises(SystemExit, match="does not exist"):
        mod["main"]([str(tmp_path / "nope")])


def test_ablation_table_pools_encoder_sets_on_matched_seeds(tmp_path, monkeypatch, capsys):
    """--pool: a strategy run on two folders (same seeds, same copied random runs) is averaged per
    (ratio, seed) before differencing; strategies missing from a folder are dropped; folders whose
    random runs differ are refused."""
    import pytest

    def folder(name, gains, random_dice=0.5):
        d = tmp_path / name
        d.mkdir()
        rows = ["dataset,strategy,ratio,n_labeled,seed,dice,hd95,train_seconds,device"]
        for seed in range(3):
            for ratio in (5, 10):
                rows.append(f"d,random,{ratio},4,{seed},{random_dice + seed / 100},1,1,cpu")
                rows += [f"d,{s},{ratio},4,{seed},{random_dice + seed / 100 + g},1,1,cpu" for s, g in gains.items()]
        (d / "results.csv").write_text("\n".join(rows) + "\n")
        return d

    a = folder("a", {"x": 0.01, "only_a": 0.05})
    b = folder("b", {"x": 0.03})
    _run_script("scripts/ablation_table.py", [a, "--ratios", "5,10", "--pool", b], monkeypatch)
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("| `x`"))
    assert [c.strip() for c in line.strip("|").split("|")][3].startswith("+2.00")   # (1 + 3) / 2 points
    assert "only_a" not in out and "Pooled: x" in out
    c = folder("c", {"x": 0.03}, random_dice=0.6)
    with pytest.raises(SystemExit, match="not paired"):
        _run_script("scripts/ablation_table.py", [a, "--pool", c], monkeypatch)
    with pytest.raises(SystemExit, match="no results.csv"):
        _run_script("scripts/ablation_table.py", [a, "--pool", tmp_path / "missing"], monkeypatch)


def test_encoder_agreement_script_on_identical_shifted_and_mismatched_encoders(tmp_path, capsys):
    """scripts/encoder_agreement.py: identical encoders agree fully; the random reference is at chance."""
    import runpy
    from pathlib import Path

    mod = runpy.run_path(str(Path(__file__).parents[1] / "scripts" / "encoder_agreement.py"))
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 8)).astype(np.float32)
    folder = tmp_path / "bench"
    (folder / "features").mkdir(parents=True)
    for f in range(4):                          # four copies of one encoder, given as FOLDER:F
        np.save(folder / "features" / f"moco-backbone-seed{f}.npy", X * (f + 1))   # scale: unit rows equal
    assert mod["main"]([f"{folder}:{f}" for f in range(4)] + ["--strategy", "kmedian", "--ratios", "10",
                                                              "--draws", "200"]) == 0
    out = capsys.readouterr().out
    assert "| 0 – 3 | 1.000 | 1.000 |" in out
    row = next(line for line in out.splitlines() if line.startswith("| 10 % (6)"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1:5] == ["1.000 [1.000, 1.000]", "1.000 [1.000, 1.000]", "1.000", "1.000"]
    assert abs(float(cells[5]) - 0.10) < 0.03            # two random 6-of-60 sets share 10 % on average
    nb = mod["neighbours"](mod["load"](f"{folder}:0"))
    assert nb.shape == (60, 10) and not (nb == np.arange(60)[:, None]).any()   # never its own neighbour
    assert mod["near_overlap"](np.array([0]), np.array([nb[0, 3]]), nb) == 1.0
    np.save(tmp_path / "short.npy", X[:50])
    with pytest.raises(SystemExit, match="one pool"):
        mod["main"]([f"{folder}:0", str(tmp_path / "short.npy")])
    with pytest.raises(SystemExit, match="does not exist"):
        mod["main"]([f"{folder}:0", f"{folder}:7"])
