"""U-Net training, Dice/HD95 with hand-computed values, and the job runner (CPU, tiny settings)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from coldseg.data.pairs import PairSet
from coldseg.segment import (SegConfig, SegJob, SegJobError, bottleneck_features, build_unet,
                             dice_per_image, evaluate, hd95_per_image, predict_proba, run_jobs,
                             scores_per_image, train_segmenter)
from coldseg.segment.train import dice_ce_loss, dihedral_augment

TINY = dict(channels=(8, 16, 32), batch_size=8, lr=1e-2)


@pytest.fixture(autouse=True)
def one_thread():
    """Two threads on a 2-core box shared with other work spin-wait badly; one is faster."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def squares(n: int, side: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Bright squares of random size and place on a dark noisy background, and their masks."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 60, (n, 3, side, side)).astype(np.uint8)
    y = np.zeros((n, side, side), np.uint8)
    for i in range(n):
        w = int(rng.integers(8, 16))
        a, b = rng.integers(0, side - w, 2)
        x[i, :, a:a + w, b:b + w] += 150
        y[i, a:a + w, b:b + w] = 1
    return x, y


def square(side: int, top: int, left: int, size: int) -> np.ndarray:
    m = np.zeros((side, side), bool)
    m[top:top + size, left:left + size] = True
    return m


# ---------------------------------------------------------------- metrics, by hand

def test_dice_of_a_shifted_square():
    truth = square(32, 4, 4, 8)                    # 64 pixels
    pred = square(32, 4, 6, 8)                     # shifted right by 2: overlap 8 x 6 = 48
    assert dice_per_image(pred[None], truth[None])[0] == pytest.approx(2 * 48 / (64 + 64))  # 0.75


def test_hd95_of_concentric_squares():
    """Truth 10x10, prediction its 6x6 centre. Inner boundary pixels are all 2 from the outer ring;
    outer ring (36 px): 24 at 2, 8 next to corners at sqrt(5), 4 corners at sqrt(8). Its 95th
    percentile (index 0.95 * 35 = 33.25 of the sorted list) falls among the corners: sqrt(8)."""
    truth, pred = square(32, 5, 5, 10), square(32, 7, 7, 6)
    assert hd95_per_image(pred[None], truth[None])[0] == pytest.approx(math.sqrt(8), abs=1e-5)
    assert dice_per_image(pred[None], truth[None])[0] == pytest.approx(2 * 36 / (100 + 36))


def test_empty_mask_conventions():
    empty, sq = np.zeros((24, 32), bool), square(32, 2, 2, 5)[:24]
    pred = np.stack([empty, sq, empty, sq])
    truth = np.stack([empty, empty, sq, sq])
    assert dice_per_image(pred, truth).tolist() == [1.0, 0.0, 0.0, 1.0]
    assert hd95_per_image(pred, truth).tolist() == [0.0, 40.0, 40.0, 0.0]   # diagonal of 24 x 32


def test_multiclass_scores_average_present_foreground_classes():
    truth = np.zeros((2, 16, 16), np.uint8)
    pred = np.zeros((2, 16, 16), np.uint8)
    truth[0][square(16, 0, 0, 4)] = 1              # class 1: perfect
    pred[0][square(16, 0, 0, 4)] = 1
    truth[0][square(16, 8, 8, 4)] = 2              # class 2: missed -> Dice 0, HD95 diagonal
    # class 3 absent from both in image 0: not counted; image 1 is empty everywhere -> (1, 0)
    dice, hd = scores_per_image(pred, truth, n_classes=4)
    assert dice.tolist() == [0.5, 1.0]
    assert hd == pytest.approx([math.hypot(16, 16) / 2, 0.0])


def test_metrics_reject_mismatched_shapes():
    with pytest.raises(ValueError, match=r"must both be \(n, H, W\)"):
        dice_per_image(np.zeros((2, 8, 8)), np.zeros((2, 8, 9)))


# ---------------------------------------------------------------- training pieces

def test_dihedral_augment_moves_image_and_mask_together_over_all_8_symmetries():
    base = np.arange(36, dtype=np.uint8).reshape(6, 6)
    y = torch.from_numpy(np.stack([base] * 64))                     # (64, 6, 6)
    x = torch.stack([y, 255 - y, y], dim=1)                           # (64, 3, 6, 6)
    g = torch.Generator().manual_seed(0)
    xa, ya = dihedral_augment(x, y, g)
    assert torch.equal(xa[:, 0], ya) and torch.equal(xa[:, 1], 255 - ya)
    d4 = []
    for k in range(4):
        r = np.rot90(base, k)
        d4 += [r.tobytes(), np.fliplr(r).tobytes()]
    seen = {a.numpy().tobytes() for a in ya}
    assert seen <= set(d4) and len(seen) == 8


def test_loss_is_low_for_confident_correct_logits_and_matches_formula():
    t = torch.zeros(2, 4, 4, dtype=torch.long)
    t[:, :2] = 1
    good = (t.float() * 40 - 20).unsqueeze(1)                         # logits +-20
    assert dice_ce_loss(good, t).item() < 1e-6
    zero = torch.zeros(2, 1, 4, 4)                                    # p = 0.5 everywhere
    # Dice: 1 - 2*(0.5*16) / (0.5*32 + 16) = 0.5; BCE = ln 2
    assert dice_ce_loss(zero, t).item() == pytest.approx(0.5 + math.log(2), abs=1e-4)
    three = torch.zeros(2, 3, 4, 4)                                   # uniform softmax, CE = ln 3
    per_class = [1 - 2 * (16 / 3) / (32 / 3 + 16), 1 - 2 * (16 / 3) / (32 / 3 + 16), 1.0]
    assert dice_ce_loss(three, t).item() == pytest.approx(np.mean(per_class) + math.log(3), abs=1e-4)


def test_build_unet_shapes_and_errors():
    net = build_unet(3, 4, channels=(8, 16, 32))
    assert net(torch.zeros(2, 3, 16, 16)).shape == (2, 4, 16, 16)
    with pytest.raises(ValueError, match="at least 2 levels"):
        build_unet(channels=(8,))
    with pytest.raises(ValueError, match="dropout=1.5"):
        build_unet(dropout=1.5)


def test_train_segmenter_learns_bright_squares():
    x, y = squares(16, seed=1)
    xt, yt = squares(16, seed=2)                                      # held out
    model = train_segmenter(x, y, SegConfig(steps=60, **TINY), seed=0, device="cpu")
    scores = evaluate(model, xt, yt, device="cpu")
    assert scores["dice"].shape == (16,) and scores["hd95"].shape == (16,)
    assert scores["dice"].mean() > 0.8


def test_train_segmenter_is_seeded_and_leaves_global_rng_alone():
    x, y = squares(6, seed=3)
    cfg = SegConfig(steps=5, dropout=0.1, **TINY)
    torch.manual_seed(123)
    expect_next = torch.rand(3)
    torch.manual_seed(123)
    a = train_segmenter(x, y, cfg, seed=4, device="cpu")
    assert torch.equal(torch.rand(3), expect_next)                   # global RNG untouched
    b = train_segmenter(x, y, cfg, seed=4, device="cpu")
    c = train_segmenter(x, y, cfg, seed=5, device="cpu")
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_train_segmenter_rejects_bad_input():
    x, y = squares(2, side=18)
    with pytest.raises(ValueError, match="divisible by 4"):
        train_segmenter(x, y, SegConfig(steps=1, **TINY), seed=0, device="cpu")
    with pytest.raises(TypeError, match="uint8"):
        train_segmenter(x.astype(np.float32), y, SegConfig(steps=1, **TINY), seed=0, device="cpu")


# ---------------------------------------------------------------- inference helpers

def test_predict_proba_and_mc_dropout():
    x, y = squares(5, seed=6)
    model = train_segmenter(x, y, SegConfig(steps=3, dropout=0.2, **TINY), seed=0, device="cpu")
    p = predict_proba(model, x, device="cpu", batch_size=2)
    assert p.shape == (5, 2, 32, 32) and p.dtype == np.float32
    assert np.allclose(p.sum(axis=1), 1.0, atol=1e-5)
    stack = predict_proba(model, x, device="cpu", mc_samples=3, reduce="stack", batch_size=2)
    assert stack.shape == (3, 5, 2, 32, 32)
    assert not np.allclose(stack[0], stack[1])                         # dropout stayed on
    mean = predict_proba(model, x, device="cpu", mc_samples=3, batch_size=2)
    assert np.allclose(mean, stack.mean(0), atol=1e-6)                 # same seed, same masks
    assert not model.training and all(not m.training for m in model.modules())
    plain = train_segmenter(x, y, SegConfig(steps=1, **TINY), seed=0, device="cpu")
    with pytest.warns(UserWarning, match="without dropout"):
        predict_proba(plain, x[:1], device="cpu", mc_samples=2)


def test_bottleneck_features_are_pooled_deepest_activations():
    x, y = squares(5, seed=7)
    model = train_segmenter(x, y, SegConfig(steps=2, **TINY), seed=0, device="cpu")
    f = bottleneck_features(model, x, device="cpu", batch_size=2)
    assert f.shape == (5, 32) and f.dtype == np.float32
    f1 = bottleneck_features(model, x[3:4], device="cpu")
    assert np.allclose(f[3], f1[0], atol=1e-5)                          # per image, not per batch
    assert not np.allclose(f[0], f[1])


# ---------------------------------------------------------------- runner

def _pairs(n: int = 24) -> PairSet:
    x, y = squares(n, seed=8)
    ids = [f"im{k:02d}" for k in range(n)]
    return PairSet(Path("."), ids, x, y, ids, 2)


def test_run_jobs_inline_yields_each_job_with_results_and_is_seeded():
    ps, test = _pairs(), np.arange(16, 24)
    cfg = SegConfig(steps=8, **TINY)
    jobs = [SegJob("a", np.arange(0, 4), 0), SegJob("b", np.arange(0, 12), 1),
            SegJob("a-again", np.arange(0, 4), 0)]
    out = list(run_jobs(jobs, ps, test, cfg, device="cpu", progress=False))
    assert [j.key for j, _ in out] == ["a", "b", "a-again"]
    keys = {"dice_mean", "hd95_mean", "dice", "hd95", "train_seconds", "device"}
    for _, r in out:
        assert keys <= set(r) and r["dice"].shape == (8,) and r["hd95"].shape == (8,)
        assert r["dice_mean"] == pytest.approx(r["dice"].mean()) and r["device"] == "cpu"
    assert np.array_equal(out[0][1]["dice"], out[2][1]["dice"])       # same seed, same Dice
    assert out[1][1]["n_train"] == 12


def test_run_jobs_rejects_test_leak_and_surfaces_failures():
    ps, test = _pairs(), np.arange(16, 24)
    with pytest.raises(ValueError, match="job 'leak': 1 training image"):
        list(run_jobs([SegJob("leak", np.array([0, 16]), 0)], ps, test, SegConfig(steps=1, **TINY),
                      device="cpu", progress=False))
    bad = SegConfig(steps=1, channels=(8, 16, 32, 64, 128, 256, 512), batch_size=2)  # 32 px < 64
    with pytest.raises(SegJobError, match="job 'deep' failed on cpu: ValueError"):
        list(run_jobs([SegJob("deep", np.arange(4), 0)], ps, test, bad, device="cpu",
                      progress=False))


def test_run_jobs_worker_processes_match_inline():
    """Spawns 2 processes (about 10-20 s on a busy 2-core box, mostly importing torch)."""
    ps, test = _pairs(), np.arange(16, 24)
    cfg = SegConfig(steps=6, **TINY)
    jobs = [SegJob(f"j{k}", np.arange(k, k + 6), k) for k in range(3)]
    pooled = dict((j.key, r) for j, r in run_jobs(jobs, ps, test, cfg, device="cpu", workers=2,
                                                    progress=False))
    inline = dict((j.key, r) for j, r in run_jobs(jobs[:1], ps, test, cfg, device="cpu",
                                                    progress=False))
    assert sorted(pooled) == ["j0", "j1", "j2"]
    assert np.allclose(pooled["j0"]["dice"], inline["j0"]["dice"], atol=1e-6)


@pytest.mark.slow
def test_run_jobs_worker_failure_is_raised_with_its_traceback():
    ps, test = _pairs(), np.arange(16, 24)
    jobs = [SegJob(f"j{k}", np.arange(k, k + 6), k) for k in range(2)]
    bad = SegConfig(steps=1, channels=(8, 16, 32, 64, 128, 256, 512), batch_size=2)
    with pytest.raises(SegJobError, match=r"(?s)worker \d on cpu failed while running job 'j\d'"
                                          r".*divisible by 64"):
        list(run_jobs(jobs[:2], ps, test, bad, device="cpu", workers=2, progress=False))
