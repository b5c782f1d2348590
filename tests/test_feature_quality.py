"""The label-free feature check: exact values on models whose answer is known."""
import dataclasses
import warnings

import numpy as np
import pytest
import torch

from coldseg.features.quality import view_consistency


class PixelModel(torch.nn.Module):
    """embed = the image's pixels, flattened; augmentation-invariant only if the views are."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def embed(self, x, layer):
        return x.flatten(1)


class MeanColourModel(PixelModel):
    """embed = per-channel mean plus a constant: crops and flips barely move it."""

    def embed(self, x, layer):
        return torch.cat([x.mean(dim=(2, 3)), torch.ones(len(x), 1)], dim=1)


class ConstantModel(PixelModel):
    def embed(self, x, layer):
        return torch.ones(len(x), 4)


def _images(n=60, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (n, 3, 1, 1), dtype=np.uint8)          # flat images of random colours
    return np.broadcast_to(base, (n, 3, 16, 16)).copy()


def test_a_constant_embedding_has_no_consistency():
    r = view_consistency(ConstantModel(), _images(), seed=0, n_images=40, k=5)
    # every similarity ties: argmax picks row 0, right for exactly 1 of 40 images
    assert r["view_top1"] == round(1 / 40, 4) and r["n_images"] == 40 and r["k"] == 5
    assert 0.0 <= r["knn_overlap"] <= 1.0


def test_colour_invariant_features_on_flat_colour_images_score_high():
    from coldseg.features.augment import AugmentConfig

    # no colour jitter, no grayscale: views of a flat image keep its colour exactly
    aug = AugmentConfig(jitter_p=0.0, gray_p=0.0, blur_p=0.0)
    r = view_consistency(MeanColourModel(), _images(), seed=1, n_images=60, k=5, augment=aug)
    assert r["view_top1"] == 1.0 and r["knn_overlap"] == 1.0
    # with the default colour jitter the same features lose much of it, but stay above chance
    r2 = view_consistency(MeanColourModel(), _images(), seed=1, n_images=60, k=5)
    assert r2["view_top1"] < 1.0 and r2["view_top1"] > r2["chance_top1"]


def test_small_pools_and_determinism():
    assert view_consistency(PixelModel(), _images(2), n_images=10)["view_top1"] is None
    a = view_consistency(PixelModel(), _images(30), seed=3, n_images=20, k=4)
    b = view_consistency(PixelModel(), _images(30), seed=3, n_images=20, k=4)
    assert a == b and a["n_images"] == 20


def test_select_manifest_carries_the_check(pool_dir, tiny_moco, tmp_path, one_torch_thread):
    import json

    import coldseg

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        coldseg.select(pool_dir, 3, out=tmp_path / "o", moco=tiny_moco, progress=False)
    fc = json.loads((tmp_path / "o" / "manifest.json").read_text())["features"]["feature_check"]
    assert fc["n_images"] == 24 and 0 <= fc["view_top1"] <= 1 and 0 <= fc["knn_overlap"] <= 1
    ref = fc["untrained"]
    assert 0 <= ref["view_top1"] <= 1 and fc["beats_untrained"] == (fc["knn_overlap"] > ref["knn_overlap"])
    # a 2-epoch model that has not beaten its own initialisation says so, once
    said = [w for w in caught if "no better than the untrained" in str(w.message)]
    assert len(said) == (0 if fc["beats_untrained"] else 1)
    html = (tmp_path / "o" / "report.html").read_text()
    assert "feature check (label-free)" in html and f"{100 * fc['view_top1']:.1f} %" in html
    assert ("NOT more stable than the untrained" in html) == (not fc["beats_untrained"])
    # a second run reads the cached features: the warning comes again (it is about the features, not the run)
    with warnings.catch_warnings(record=True) as again:
        warnings.simplefilter("always")
        coldseg.select(pool_dir, 3, out=tmp_path / "o2", moco=tiny_moco, progress=False)
    assert json.loads((tmp_path / "o2" / "manifest.json").read_text())["features"]["source"] == "cache"
    assert len([w for w in again if "no better than the untrained" in str(w.message)]) == len(said)


def test_warn_if_untrained_reads_a_cached_check():
    from coldseg.features.quality import warn_if_untrained

    weak = {"knn_overlap": 0.05, "beats_untrained": False, "untrained": {"knn_overlap": 0.06}}
    with pytest.warns(UserWarning, match=r"knn_overlap 0.050 vs 0.060"):
        warn_if_untrained(weak)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_untrained(None)                                        # tiny pool: no check was possible
        warn_if_untrained({"view_top1": None})
        warn_if_untrained(dict(weak, beats_untrained=True))


def test_untrained_reference_is_the_training_start(tiny_moco):
    """feature_check's reference network is exactly the one train_moco starts from."""
    from coldseg.features.train import initial_model, train_moco

    images = np.random.default_rng(0).integers(0, 256, (16, 3, 32, 32), dtype=np.uint8)
    a = initial_model(tiny_moco, 16, seed=4)
    # lr 0: SGD leaves the query weights where training started them (BN running statistics move, and
    # the key encoder's momentum update m·k + (1-m)·q rounds in the last bit)
    model, _ = train_moco(images, dataclasses.replace(tiny_moco, epochs=1, lr=0.0, candidates="none"), seed=4,
                          progress=False)
    pa, pb = dict(a.encoder_q.named_parameters()), dict(model.encoder_q.named_parameters())
    assert pa.keys() == pb.keys()
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    other = dict(initial_model(tiny_moco, 16, seed=5).encoder_q.named_parameters())
    assert not all(torch.equal(pa[k], other[k]) for k in pa)
