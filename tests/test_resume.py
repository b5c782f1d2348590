"""An interrupted MoCo training resumed from its checkpoint gives exactly the features of an
uninterrupted run with the same seed (CPU), through the library and through `coldseg select --resume`."""
import dataclasses
import json

import numpy as np
import pytest
import torch

import coldseg.features.embed
import coldseg.features.train
from coldseg.data.pool import load_pool
from coldseg.features.embed import cache_key, embed_images
from coldseg.features.train import train_moco
from conftest import error_lines

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest


@pytest.fixture
def images(pool_dir, tiny_moco):
    """16 of the synthetic images, (16, 3, 32, 32) uint8: two batches of 8 per epoch."""
    return load_pool(pool_dir, tiny_moco.image_size, progress=False).images[:16]


# 2 epochs, interrupted after the first. select_at=0.5: the eq. 7 choice (before epoch 1) happens after
# the resume; select_at=0: it happened before the interruption and must come back from the checkpoint.
@pytest.mark.parametrize("select_at", [0.5, 0.0])
def test_resumed_training_equals_uninterrupted(images, tiny_moco, tmp_path, select_at):
    epochs, stop = 2, 1
    cfg = dataclasses.replace(tiny_moco, epochs=epochs, select_at=select_at)
    full, full_log = train_moco(images, cfg, seed=5, progress=False)

    ckpt = tmp_path / "checkpoint.pt"
    _, part_log = train_moco(images, cfg, seed=5, checkpoint=ckpt, progress=False, stop_after_epoch=stop)
    assert len(part_log["loss"]) == stop
    assert torch.load(ckpt, weights_only=False)["epoch"] == stop
    chosen_before = part_log["augmentation"] is not None
    assert chosen_before == (stop > round(cfg.select_at * epochs))

    resumed, log = train_moco(images, cfg, seed=5, checkpoint=ckpt, resume=True, progress=False)
    assert log["loss"] == full_log["loss"]            # bit-identical losses, epoch by epoch
    assert log["augmentation"] == full_log["augmentation"]
    for (name, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name
    assert np.array_equal(embed_images(resumed, images), embed_images(full, images))


def test_resume_without_checkpoint_trains_from_scratch(images, tiny_moco, tmp_path):
    cfg = dataclasses.replace(tiny_moco, epochs=1, candidates="none")
    a, _ = train_moco(images, cfg, seed=2, progress=False)
    b, _ = train_moco(images, cfg, seed=2, checkpoint=tmp_path / "none.pt", resume=True, progress=False)
    assert np.array_equal(embed_images(a, images), embed_images(b, images))
    assert (tmp_path / "none.pt").exists()  # and checkpoints as it goes


def test_checkpoint_of_other_settings_or_seed_is_refused(images, tiny_moco, tmp_path):
    cfg = dataclasses.replace(tiny_moco, epochs=2, candidates="none")
    ckpt = tmp_path / "checkpoint.pt"
    train_moco(images, cfg, seed=0, checkpoint=ckpt, progress=False, stop_after_epoch=1)
    with pytest.raises(ValueError, match="made with other settings"):
        train_moco(images, dataclasses.replace(cfg, temperature=0.1), seed=0, checkpoint=ckpt, resume=True,
                   progress=False)
    with pytest.raises(ValueError, match="made with other settings"):
        train_moco(images, cfg, seed=1, checkpoint=ckpt, resume=True, progress=False)
    # a checkpoint of a version that kept no per-image confidence tally
    st = torch.load(ckpt, weights_only=False)
    st["model"] = {k: v for k, v in st["model"].items() if not k.startswith("confidence_")}
    torch.save(st, ckpt)
    with pytest.raises(ValueError, match="older coldseg"):
        train_moco(images, cfg, seed=0, checkpoint=ckpt, resume=True, progress=False)


def _args(pool, out, cache, *extra):
    return ("select", pool, "--budget", "6", "--out", out, "--image-size", "32", "--epochs", "2", "--min-steps", "0",
            "--batch-size", "8", "--cache-dir", cache, "--quiet", "--no-report", *extra)


def test_cli_interrupted_then_resume_gives_uninterrupted_features(pool_dir, tmp_path, cli, tiny_cli, monkeypatch):
    # reference: one uninterrupted run
    code, _, err = cli(*_args(pool_dir, tmp_path / "ref", tmp_path / "cache_ref"))
    assert code == 0, err
    ref = np.load(tmp_path / "ref" / "features.npy")

    # Ctrl-C after the first epoch's checkpoint
    real_train = coldseg.features.embed.train_moco

    def interrupted(*a, **k):
        real_train(*a, **{**k, "stop_after_epoch": 1})
        raise KeyboardInterrupt

    monkeypatch.setattr(coldseg.features.embed, "train_moco", interrupted)
    out, cache = tmp_path / "out", tmp_path / "cache"
    code, _, err = cli(*_args(pool_dir, out, cache))
    assert code == 130
    assert "--resume" in err
    assert not out.exists()  # nothing half-written
    (ckpt,) = cache.glob("*/checkpoint.pt")
    assert torch.load(ckpt, weights_only=False)["epoch"] == 1
    assert not list(cache.glob("*/features.npy"))  # an interrupted run is not a cache entry

    # --resume: only the missing epoch runs
    monkeypatch.setattr(coldseg.features.embed, "train_moco", real_train)
    saved = []
    real_save = coldseg.features.train._atomic_save
    monkeypatch.setattr(coldseg.features.train, "_atomic_save",
                        lambda obj, path: (saved.append(obj["epoch"]), real_save(obj, path)))
    code, _, err = cli(*_args(pool_dir, out, cache, "--resume"))
    assert code == 0, err
    assert saved == [2]
    assert np.array_equal(np.load(out / "features.npy"), ref)
    assert (out / "selection.csv").read_bytes() == (tmp_path / "ref" / "selection.csv").read_bytes()
    man = json.loads((out / "manifest.json").read_text())
    ref_man = json.loads((tmp_path / "ref" / "manifest.json").read_text())
    assert man["features"]["training"]["loss_per_epoch"] == ref_man["features"]["training"]["loss_per_epoch"]
    assert man["augmentation"] == ref_man["augmentation"]


def test_cli_resume_with_a_checkpoint_of_other_settings_fails_clearly(pool_dir, tmp_path, cli, tiny_cli):
    cfg = dataclasses.replace(tiny_cli, image_size=32, epochs=2, batch_size=8)  # what the CLI builds
    pool = load_pool(pool_dir, 32, progress=False)
    folder = tmp_path / "cache" / cache_key(pool.content_key(), cfg, 0)
    folder.mkdir(parents=True)
    other = dataclasses.replace(cfg, epochs=1, candidates="none")  # e.g. copied from another run
    train_moco(pool.images[:8], other, seed=0, checkpoint=folder / "checkpoint.pt", progress=False)

    out = tmp_path / "out"
    code, _, err = cli(*_args(pool_dir, out, tmp_path / "cache", "--resume"))
    assert code == 2
    (line,) = error_lines(err)
    assert "was made with other settings" in line and "without --resume" in line
    assert not out.exists()


def test_another_feature_layer_reuses_the_cached_training(images, tiny_moco, tmp_path, monkeypatch):
    """The cache key leaves the layer out and keeps the trained encoder: switching layers embeds again
    without training, and gives what a training for that layer gives."""
    from coldseg.features.embed import compute_features

    cache = tmp_path / "cache"
    back, info = compute_features(images, seed=0, settings=tiny_moco, cache_dir=cache, progress=False)
    assert not info["cache_hit"] and info["feature_check"] is not None
    fresh, _ = compute_features(images, seed=0, settings=dataclasses.replace(tiny_moco, feature_layer="multiscale"),
                                cache_dir=tmp_path / "other", progress=False)

    def no_training(*a, **k):
        raise AssertionError("trained again")

    monkeypatch.setattr(coldseg.features.embed, "train_moco", no_training)
    ms_cfg = dataclasses.replace(tiny_moco, feature_layer="multiscale")
    ms, info = compute_features(images, seed=0, settings=ms_cfg, cache_dir=cache, progress=False)
    assert not info["cache_hit"] and not info["trained"]
    assert np.array_equal(ms, fresh) and ms.shape[1] > back.shape[1]
    assert info["feature_check"] is not None and info["log"]["loss"]
    # both layers are cache hits now, each with its own check; the backbone's file is features.npy
    (entry,) = cache.iterdir()
    assert sorted(p.name for p in entry.iterdir()) == ["confidence.npy", "encoder.pt", "features-multiscale.npy",
                                                       "features.npy", "train.json"]
    for cfg, want in ((tiny_moco, back), (ms_cfg, ms)):
        again, info = compute_features(images, seed=0, settings=cfg, cache_dir=cache, progress=False)
        assert info["cache_hit"] and np.array_equal(again, want)
    assert set(json.loads((entry / "train.json").read_text())["feature_checks"]) == {"backbone", "multiscale"}


@pytest.mark.filterwarnings("ignore:the trained features")   # a tiny MoCo has not learnt
def test_a_damaged_kept_encoder_is_reported_and_trained_again(images, tiny_moco, tmp_path):
    from coldseg.features.embed import compute_features

    cache = tmp_path / "cache"
    compute_features(images, seed=0, settings=tiny_moco, cache_dir=cache, progress=False)
    (entry,) = cache.iterdir()
    (entry / "encoder.pt").write_bytes(b"truncated")
    ms_cfg = dataclasses.replace(tiny_moco, feature_layer="multiscale")
    with pytest.warns(UserWarning, match="encoder.pt could not be read.*training the encoder again"):
        ms, info = compute_features(images, seed=0, settings=ms_cfg, cache_dir=cache, progress=False)
    assert info["trained"]
    fresh, _ = compute_features(images, seed=0, settings=ms_cfg, cache_dir=tmp_path / "other", progress=False)
    assert np.array_equal(ms, fresh)                                  # the same training, done again
    assert torch.load(entry / "encoder.pt", weights_only=True)          # replaced by a readable one
