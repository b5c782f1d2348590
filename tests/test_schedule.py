"""MoCo schedule: ``min_steps`` lengthens training on small pools and leaves large pools alone."""
import dataclasses
from pathlib import Path

import numpy as np

import pytest

from coldseg.data.pool import load_pool
from coldseg.features.train import MocoConfig, moco_epochs, moco_steps, train_moco

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest


@pytest.mark.parametrize("n,batch,epochs,min_steps,want_epochs,want_steps", [
    (1000, 128, 30, 0, 30, 7 * 30),         # no minimum: the epochs as given
    (1000, 128, 30, 1000, 143, 7 * 143),    # 7 steps per epoch: ceil(1000 / 7) epochs
    (100_000, 128, 30, 1000, 30, 781 * 30), # a large pool already trains more than the minimum
    (50, 128, 2, 10, 10, 10),               # pool below one batch: one step (the whole pool) per epoch
    (256, 128, 3, 6, 3, 6),                 # exactly the minimum
])
def test_epochs_and_steps(n, batch, epochs, min_steps, want_epochs, want_steps):
    cfg = MocoConfig(batch_size=batch, epochs=epochs, min_steps=min_steps)
    assert moco_epochs(cfg, n) == want_epochs
    assert moco_steps(cfg, n) == want_steps
    assert moco_steps(cfg, n) >= min_steps


def test_training_runs_the_minimum_number_of_steps(pool_dir, tiny_moco):
    images = load_pool(pool_dir, tiny_moco.image_size, progress=False).images[:16]   # 2 steps per epoch
    cfg = dataclasses.replace(tiny_moco, epochs=1, min_steps=5)
    _, log = train_moco(images, cfg, seed=0, progress=False)
    assert len(log["loss"]) == moco_epochs(cfg, 16) == 3
    assert log["augmentation"]["chosen_after_epoch"] == 2   # select_at 0.5 of the 3 epochs, rounded


def test_benchmark_schedule_flags_reach_moco_and_settings(tmp_path, monkeypatch):
    import argparse

    import coldseg.features.embed
    from coldseg.bench.cli import add_benchmark_parser, config_from_args
    from coldseg.bench.sweep import settings_of, _features_fn

    ap = argparse.ArgumentParser()
    add_benchmark_parser(ap.add_subparsers())
    args = ap.parse_args(["benchmark", str(tmp_path), "--out", str(tmp_path / "o"), "--strategies", "random",
                          "--ssl-batch-size", "32", "--ssl-min-steps", "700", "--image-size", "32",
                          "--feature-seeds", "2", "--feature-seed-offset", "3"])
    cfg = config_from_args(args)
    assert "--ssl-batch-size 32 --ssl-min-steps 700 --feature-seeds 2 --feature-seed-offset 3" in cfg.command
    assert cfg.feature_seeds == 2 and cfg.feature_seed_offset == 3
    seen = {}

    def fake_compute(images, *, settings, **kw):
        seen["cfg"] = settings
        return np.zeros((len(images), 4), np.float32), {}

    monkeypatch.setattr(coldseg.features.embed, "compute_features", fake_compute)
    _features_fn(cfg, tmp_path / "o")(np.zeros((3, 3, 32, 32), np.uint8), 0)
    assert (seen["cfg"].batch_size, seen["cfg"].min_steps, seen["cfg"].image_size) == (32, 700, 32)

    class Pairs:  # what settings_of reads of the pairs
        ids, n_classes = ["a"], 2

        def __len__(self):
            return 1

    from coldseg.segment.train import SegConfig
    s = settings_of(cfg, SegConfig(), Pairs())
    assert (s["ssl_batch_size"], s["ssl_min_steps"]) == (32, 700)
    plain = config_from_args(ap.parse_args(["benchmark", str(tmp_path), "--out", str(tmp_path / "o"),
                                            "--strategies", "random"]))
    d = MocoConfig()
    s = settings_of(plain, SegConfig(), Pairs())
    assert (s["ssl_batch_size"], s["ssl_min_steps"]) == (d.batch_size, d.min_steps)   # effective values
    pixels = dataclasses.replace(plain, features="pixels")
    assert "ssl_batch_size" not in settings_of(pixels, SegConfig(), Pairs())


def test_folders_from_before_the_schedule_was_recorded(tmp_path):
    """A folder whose settings lack the MoCo schedule was made with batch 128 and no minimum: resuming
    it with those values works, with today's defaults it is refused by name."""
    from coldseg.bench import results as R
    from coldseg.bench.sweep import LEGACY_SSL_SCHEDULE

    R.check_or_write_settings(tmp_path, {"image_size": 64})                     # an old folder
    R.check_or_write_settings(tmp_path, {"image_size": 64, **LEGACY_SSL_SCHEDULE}, legacy=LEGACY_SSL_SCHEDULE)
    with pytest.raises(R.SettingsMismatch, match="ssl_batch_size: folder has 128, this command gives 32"):
        R.check_or_write_settings(tmp_path, {"image_size": 64, "ssl_batch_size": 32, "ssl_min_steps": 0},
                                  legacy=LEGACY_SSL_SCHEDULE)


def test_benchmark_candidates_flag_reaches_moco_and_settings(tmp_path, monkeypatch):
    """--ssl-candidates none turns the eq. 7 rule off in the folder's MoCo trainings, is recorded in
    settings.json (so a folder cannot mix the two) and is left out of the settings when not given."""
    import argparse

    import coldseg.features.embed
    from coldseg.bench.cli import add_benchmark_parser, config_from_args
    from coldseg.bench.sweep import settings_of, _features_fn
    from coldseg.segment.train import SegConfig

    ap = argparse.ArgumentParser()
    add_benchmark_parser(ap.add_subparsers())
    base = ["benchmark", str(tmp_path), "--out", str(tmp_path / "o"), "--strategies", "random"]
    cfg = config_from_args(ap.parse_args(base + ["--ssl-candidates", "none"]))
    assert "--ssl-candidates none" in cfg.command
    seen = []
    monkeypatch.setattr(coldseg.features.embed, "compute_features",
                        lambda images, *, settings, **kw: (seen.append(settings), (np.zeros((len(images), 4)), {}))[1])
    _features_fn(cfg, tmp_path / "o")(np.zeros((3, 3, 32, 32), np.uint8), 0)

    class Pairs:
        ids, n_classes = ["a"], 2

        def __len__(self):
            return 1

    assert seen[-1].candidates == "none"
    assert settings_of(cfg, SegConfig(), Pairs())["ssl_candidates"] == "none"
    plain = config_from_args(ap.parse_args(base))
    _features_fn(plain, tmp_path / "o")(np.zeros((3, 3, 32, 32), np.uint8), 0)
    assert seen[-1].candidates == MocoConfig().candidates == "auto"
    assert "ssl_candidates" not in settings_of(plain, SegConfig(), Pairs())   # older folders still match
    assert "ssl_candidates" not in settings_of(config_from_args(ap.parse_args(base + ["--ssl-candidates", "auto"])),
                                               SegConfig(), Pairs())


@pytest.mark.parametrize("flag", [["--ssl-batch-size", "1"], ["--ssl-min-steps", "-1"], ["--feature-seeds", "0"],
                                  ["--ssl-candidates", "colour"], ["--feature-seed-offset", "-2"],
                                  ["--device", "gpu"]])
def test_bad_benchmark_schedule_flags_are_named(tmp_path, flag):
    import argparse

    from coldseg.bench.cli import add_benchmark_parser, config_from_args

    ap = argparse.ArgumentParser()
    add_benchmark_parser(ap.add_subparsers())
    with pytest.raises(ValueError, match=flag[0]):
        config_from_args(ap.parse_args(["benchmark", str(tmp_path), "--out", str(tmp_path / "o"),
                                        "--strategies", "random", *flag]))


def test_select_min_steps_flag(pool_dir, tmp_path, cli):
    from coldseg.cli import _moco, build_parser

    args = build_parser().parse_args(["select", str(pool_dir), "--budget", "2", "--out", str(tmp_path / "o"),
                                      "--min-steps", "500"])
    assert _moco(args).min_steps == 500
    code, _, err = cli("select", pool_dir, "--budget", "2", "--out", tmp_path / "o", "--min-steps", "-3")
    assert code != 0 and "--min-steps -3 must be 0 or more" in err
    assert not (tmp_path / "o").exists()


def test_unknown_augmentation_candidate_fails_before_any_image_is_read(tmp_path, cli):
    """MocoConfig checks the eq. 7 candidate names itself, so `coldseg select --candidates` and the API fail
    at once, naming the bad name and the choices, before the pool is read; nothing is written."""
    with pytest.raises(ValueError, match="candidates='colour'.*choose from: crop, color"):
        MocoConfig(candidates="colour")
    assert MocoConfig(candidates="none").candidates == "none" and MocoConfig(candidates="crop, blur")

    missing = tmp_path / "never-read"   # a folder that does not exist: reading it would fail with "does not exist"
    code, _, err = cli("select", missing, "--budget", "2", "--out", tmp_path / "o", "--candidates", "colour")
    assert code == 2 and "unknown augmentation candidate(s) ['colour']" in err and "does not exist" not in err
    assert not (tmp_path / "o").exists()


def test_feature_schedule_benchmark_prints_one_line_per_setting(pool_dir, monkeypatch, capsys):
    import json
    import runpy
    import sys

    monkeypatch.setattr(sys, "argv", ["feature_schedule.py", str(pool_dir), "--image-size", "32", "--settings",
                                      "width=8,batch_size=8,epochs=1,min_steps=0,candidates=none;"
                                      "width=8,batch_size=8,epochs=1,min_steps=6,candidates=none"])
    runpy.run_path(str(Path(__file__).parents[1] / "benchmarks" / "feature_schedule.py"), run_name="__main__")
    rows = [json.loads(ln) for ln in capsys.readouterr().out.splitlines()]
    n = rows[0]["n"]
    assert [r["steps"] for r in rows] == [n // 8, moco_steps(MocoConfig(batch_size=8, epochs=1, min_steps=6), n)]
    assert rows[1]["steps"] >= 6 > rows[0]["steps"]
    for r in rows:
        fc = r["feature_check"]
        assert 0 <= fc["knn_overlap"] <= 1 and "untrained" in fc and isinstance(fc["beats_untrained"], bool)
        assert r["chance_loss"] > 0
