"""Stacked U-Nets (G models as one grouped network) against G separate MONAI U-Nets, on the CPU.

Forward outputs and gradients agree to float32 rounding. After training, every weight agrees to
~1e-4 except the biases of convolutions that feed a BatchNorm and the BatchNorms' running means: such
a bias has an analytically zero gradient in training mode (BatchNorm subtracts the batch mean), so
AdamW divides rounding noise by its own magnitude and moves the bias by up to ``lr`` per step in a
random direction. ``train_segmenter`` alone does the same when only its thread count changes (about
0.016 on the first bias after 8 steps of the test below, the same size as stacked vs separate), so
those tensors are compared through the models' predictions (Dice) instead.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from coldseg.data.pairs import PairSet
from coldseg.segment.metrics import evaluate
from coldseg.segment.runner import SegJob, SegJobError, predict_proba, resolve_parallelism, run_jobs
from coldseg.segment.stacked import (StackedUNet, cat_per_model, dihedral_with, models_to_channels,
                                     monai_blocks, stack_models, stacked_dice_ce_loss, train_stacked)
from coldseg.segment.train import SegConfig, dice_ce_loss, dihedral_augment, train_segmenter
from coldseg.segment.unet import build_unet

CH = (8, 16, 32)
TINY = dict(channels=CH, batch_size=8, lr=1e-2)


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def squares(n: int, side: int = 32, seed: int = 0, classes: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Bright squares on dark noise; mask = square (class 1, or 1..classes-1 by brightness)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 60, (n, 3, side, side)).astype(np.uint8)
    y = np.zeros((n, side, side), np.uint8)
    for i in range(n):
        w = int(rng.integers(8, 16))
        a, b = rng.integers(0, side - w, 2)
        c = 1 + i % (classes - 1)
        x[i, :, a:a + w, b:b + w] += 60 + 60 * c
        y[i, a:a + w, b:b + w] = c
    return x, y


def monai_models(seeds, dropout: float = 0.0, out: int = 1) -> list[torch.nn.Module]:
    out_models = []
    for s in seeds:
        torch.manual_seed(s)
        out_models.append(build_unet(3, out, CH, dropout))
    return out_models


def pre_bn(name: str, state: dict) -> bool:
    """A conv bias followed by a BatchNorm, or a running mean (see the module docstring)."""
    return name.endswith("running_mean") or (name.endswith("conv.bias")
                                             and name.replace("conv.bias", "adn.N.weight") in state)


def weight_gap(a: torch.nn.Module, b: torch.nn.Module) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return max((sa[k].double() - sb[k].double()).abs().max().item() for k in sa if not pre_bn(k, sa))


# ------------------------------------------------------------------ the network itself

@pytest.mark.parametrize("channels_last", [False, True])
def test_forward_matches_each_model_in_train_and_eval_mode(channels_last):
    models = monai_models([0, 1, 2])
    net = StackedUNet.from_models(models)
    gen = torch.Generator().manual_seed(10)
    xs = [torch.randn(4, 3, 32, 32, generator=gen) for _ in range(3)]
    X = stack_models(xs)                                                    # (4, 9, 32, 32)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        X = X.contiguous(memory_format=torch.channels_last)
    for train in (True, False):
        net.train(train)
        for m in models:
            m.train(train)
        with torch.no_grad():
            out = net(X)                                                    # (4, 3, 32, 32)
            ref = torch.cat([m(x) for m, x in zip(models, xs)], dim=1)
        assert out.shape == (4, 3, 32, 32)
        assert torch.allclose(out, ref, atol=1e-5), (train, (out - ref).abs().max())
    if channels_last:                                                       # the layout survives the skips
        assert out.is_contiguous(memory_format=torch.channels_last)


def test_gradients_of_a_summed_loss_are_each_models_own():
    models = monai_models([3, 4, 5])
    net = StackedUNet.from_models(models)
    gen = torch.Generator().manual_seed(11)
    xs = [torch.randn(4, 3, 32, 32, generator=gen) for _ in range(3)]
    sum(((m(x) - 0.5) ** 2).mean() for m, x in zip(models, xs)).backward()
    out = net(stack_models(xs)).view(4, 3, 1, 32, 32)
    ((out - 0.5) ** 2).mean(dim=(0, 2, 3, 4)).sum().backward()
    checked = 0
    for g, m in enumerate(models):
        for blk, mb in zip(net.blocks(), monai_blocks(m)):
            for dst, sl, src in blk.tensor_pairs(mb, g):
                if src.requires_grad:
                    assert torch.allclose(dst.grad[sl], src.grad, atol=1e-6, rtol=1e-4)
                    checked += 1
    n_params = sum(1 for _ in models[0].parameters())
    assert checked == 3 * n_params


def test_extract_round_trips_every_tensor_exactly_and_leaves_the_global_rng_alone():
    models = monai_models([6, 7], dropout=0.1)
    for m in models:                                                        # non-trivial BN buffers
        m.train()(torch.randn(2, 3, 32, 32))
    net = StackedUNet.from_models(models)
    state = torch.get_rng_state()
    back = net.to_models()
    assert torch.equal(state, torch.get_rng_state())
    for m, b in zip(models, back):
        sa, sb = m.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
        assert isinstance(b, type(m)) and b.training
        assert b.model[2].conv.output_padding == (1, 1)
    with pytest.raises(ValueError, match="model 2 does not exist"):
        net.extract(2)
    with pytest.raises(ValueError, match="differ"):
        StackedUNet.from_models([build_unet(3, 1, CH), build_unet(3, 1, (8, 16, 64))])


def test_stacking_helpers_match_their_per_model_versions():
    gen = torch.Generator().manual_seed(0)
    a = [torch.randn(2, 3, 4, 4, generator=gen) for _ in range(2)]
    b = [torch.randn(2, 5, 4, 4, generator=gen) for _ in range(2)]
    want = torch.cat([torch.cat([a[0], b[0]], 1), torch.cat([a[1], b[1]], 1)], 1)   # (2, 16, 4, 4)
    assert torch.equal(cat_per_model(stack_models(a), stack_models(b), 2), want)
    cl = cat_per_model(stack_models(a, channels_last=True), stack_models(b, channels_last=True), 2)
    assert torch.equal(cl, want) and cl.is_contiguous(memory_format=torch.channels_last)
    rows = torch.cat(a)                                                    # (4, 3, 4, 4) batch-stacked
    for cl in (False, True):
        got = models_to_channels(rows, 2, channels_last=cl)
        assert torch.equal(got, stack_models(a)) and got.is_contiguous(
            memory_format=torch.channels_last if cl else torch.contiguous_format)
    # augmentation: same coins as dihedral_augment draws -> the same images and masks
    x, y = torch.randn(6, 3, 8, 8, generator=gen), torch.randint(0, 2, (6, 8, 8), generator=gen)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    xa, ya = dihedral_augment(x, y, g1)
    xb, yb = dihedral_with(x, y, torch.rand((3, 6), generator=g2) < 0.5)
    assert torch.equal(xa, xb) and torch.equal(ya, yb)


@pytest.mark.parametrize("k", [1, 3])
def test_stacked_loss_is_each_models_dice_ce_loss(k):
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(4, 2 * k, 8, 8, generator=gen)                     # G = 2
    target = torch.randint(0, max(k, 2), (2, 4, 8, 8), generator=gen)
    got = stacked_dice_ce_loss(logits, target)
    want = torch.stack([dice_ce_loss(logits[:, g * k:(g + 1) * k], target[g]) for g in range(2)])
    assert got.shape == (2,) and torch.allclose(got, want, atol=1e-6)


# ------------------------------------------------------------------ training

def check_like_alone(stacked: torch.nn.Module, alone: torch.nn.Module, cfg: SegConfig, x, y,
                     n_classes: int = 2) -> None:
    assert not stacked.training and type(stacked) is type(alone)
    assert weight_gap(stacked, alone) < 1e-4                                 # observed <= 5e-6
    sa, sb = stacked.state_dict(), alone.state_dict()
    free = max((sa[k] - sb[k]).abs().max().item() for k in sa if pre_bn(k, sa))
    assert free < cfg.steps * cfg.lr                         # AdamW moves a tensor <= ~lr per step
    pa, pb = predict_proba(stacked, x, device="cpu"), predict_proba(alone, x, device="cpu")
    assert np.abs(pa - pb).max() < 0.005                                     # observed <= 5e-4
    da = evaluate(stacked, x, y, n_classes=n_classes)["dice"]
    db = evaluate(alone, x, y, n_classes=n_classes)["dice"]
    assert np.abs(da - db).max() < 0.02               # observed <= 6e-4 (pixels near p = 0.5 flip)


def test_train_stacked_follows_separate_trainings_with_different_subset_sizes():
    x, y = squares(24)
    cfg = SegConfig(steps=8, channels=CH, batch_size=8)                      # the recipe's lr 1e-3
    subsets, seeds = [np.arange(0, 3), np.arange(3, 13)], [4, 7]
    stacked = train_stacked(x, y, subsets, seeds, cfg, device="cpu")
    for a, s, sd in zip(stacked, subsets, seeds):
        check_like_alone(a, train_segmenter(x[s], y[s], cfg, seed=sd, device="cpu"), cfg, x[16:], y[16:])


def test_train_stacked_dropout_masks_follow_each_models_seed_on_cpu():
    """On the CPU the per-model dropout generators reproduce F.dropout's masks exactly, so weights
    match as without dropout (they would drift apart by O(lr) if a single mask differed)."""
    x, y = squares(16)
    cfg = SegConfig(steps=4, dropout=0.2, channels=CH, batch_size=8)
    subsets, seeds = [np.arange(0, 6), np.arange(6, 12)], [1, 2]
    stacked = train_stacked(x, y, subsets, seeds, cfg, device="cpu")
    for a, s, sd in zip(stacked, subsets, seeds):
        assert weight_gap(a, train_segmenter(x[s], y[s], cfg, seed=sd, device="cpu")) < 1e-4


@pytest.mark.parametrize("n_classes, dropout, augment", [(2, 0.2, True), (2, 0.0, False), (3, 0.0, True)])
def test_a_stack_of_one_follows_train_segmenter_to_rounding(n_classes, dropout, augment):
    """G = 1: grouped convolutions are dense ones; only the loss's reduction order differs. Any
    difference in the random sequence (init, batch indices, augmentation, dropout masks), the loss,
    AdamW or the schedule would move the weights by O(lr) = 1e-2, not 1e-6."""
    x, y = squares(12, classes=n_classes)
    cfg = SegConfig(steps=3, dropout=dropout, augment=augment, **TINY)
    (a,) = train_stacked(x, y, [np.arange(2, 10)], [5], cfg, device="cpu", n_classes=n_classes)
    b = train_segmenter(x[2:10], y[2:10], cfg, seed=5, device="cpu", n_classes=n_classes)
    assert a.out_channels == (1 if n_classes == 2 else 3)
    assert weight_gap(a, b) < 1e-6                                           # observed <= 1.2e-7


def test_train_stacked_rejects_bad_input():
    x, y = squares(12)
    cfg = SegConfig(steps=1, **TINY)
    with pytest.raises(ValueError, match="one seed per subset"):
        train_stacked(x, y, [np.arange(3)], [0, 1], cfg, device="cpu")
    with pytest.raises(ValueError, match="subset 1 is empty"):
        train_stacked(x, y, [np.arange(3), np.array([], int)], [0, 1], cfg, device="cpu")
    with pytest.raises(ValueError, match="subset 0 holds indices outside 0..11"):
        train_stacked(x, y, [np.array([0, 12])], [0], cfg, device="cpu")
    with pytest.raises(ValueError, match="divisible by 64"):
        train_stacked(x, y, [np.arange(3)], [0], SegConfig(steps=1, channels=(8,) * 7), device="cpu")
    with pytest.raises(ValueError, match="num_res_units=1"):
        train_stacked(x, y, [np.arange(3)], [0], SegConfig(steps=1, num_res_units=1, **TINY), device="cpu")


# ------------------------------------------------------------------ runner and iterative rounds

def _pairs(n: int = 24) -> PairSet:
    x, y = squares(n)
    ids = [f"s{i:02d}" for i in range(n)]
    return PairSet(Path("."), ids, x, y, ids, 2)


def test_resolve_parallelism_defaults_and_conflicts():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    many = min(8, max(1, (os.cpu_count() or 2) // 2))
    assert resolve_parallelism(cpu, None, None) == (1, 1)
    assert resolve_parallelism(cuda, None, None) == (1, 8)
    assert resolve_parallelism(cuda, 1, None) == (1, 1)
    assert resolve_parallelism(cuda, 8, None) == (8, 1)
    assert resolve_parallelism(cuda, None, 16) == (1, 16)
    assert resolve_parallelism(cuda, None, 1) == (many, 1)
    assert resolve_parallelism(cpu, None, 4) == (1, 4)
    with pytest.raises(ValueError, match="not both"):
        resolve_parallelism(cuda, 2, 2)
    with pytest.raises(ValueError, match="stack=0 must be at least 1"):
        resolve_parallelism(cpu, None, 0)


def test_run_jobs_stacked_yields_in_job_order_and_matches_one_at_a_time():
    ps, test = _pairs(), np.arange(16, 24)
    cfg = SegConfig(steps=6, **TINY)
    jobs = [SegJob(f"j{k}", np.arange(k, k + 3 + 3 * k), k) for k in range(3)]   # 3, 6, 9 images
    stacked = list(run_jobs(jobs, ps, test, cfg, device="cpu", stack=2, progress=False))
    inline = dict((j.key, r) for j, r in run_jobs(jobs, ps, test, cfg, device="cpu", progress=False))
    assert [j.key for j, _ in stacked] == ["j0", "j1", "j2"]
    assert [r["stack"] for _, r in stacked] == [2, 2, 1]                   # chunks of 2, then 1
    for job, r in stacked:
        assert r["n_train"] == len(job.train_idx) and r["dice"].shape == (8,)
        assert np.abs(r["dice"] - inline[job.key]["dice"]).max() < 0.02   # observed: identical
    bad = SegConfig(steps=1, channels=(8,) * 7, batch_size=2)               # 32 px < 64
    with pytest.raises(SegJobError, match=r"job 'j0', 'j1' \(trained together\) failed on cpu: ValueError"):
        list(run_jobs(jobs, ps, test, bad, device="cpu", stack=2, progress=False))


@pytest.mark.parametrize("strategy", ["coreset-iter", "bayesian"])
def test_lockstep_iterative_equals_each_strategys_own_run(strategy):
    from coldseg.iterative import get_iterative
    from coldseg.iterative.parallel import IterativeJob, _lockstep, run_iterative

    ps = _pairs(20)
    pool = np.arange(16)
    cfg = SegConfig(steps=3, **TINY)
    jobs = [IterativeJob(f"{strategy}/{b}/{s}", strategy, b, s) for b, s in ((6, 0), (2, 1), (7, 2))]

    def one_by_one(pos_list, seeds, rcfg):                                 # the lockstep logic alone
        return [train_segmenter(ps.images[pool[p]], ps.masks[pool[p]], rcfg, seed=s, device="cpu")
                for p, s in zip(pos_list, seeds)]

    with pytest.warns(UserWarning, match="budget=2 is smaller than rounds=3"):
        exact = {j.key: r for j, r in _lockstep(jobs, ps, pool, cfg, 3, torch.device("cpu"), 2,
                                                 train_many=one_by_one)}
        stacked = {j.key: r for j, r in run_iterative(jobs, ps, pool, cfg, rounds=3, device="cpu", stack=2)}
    for job in jobs:
        with pytest.warns(UserWarning) if job.budget < 3 else contextlib.nullcontext():
            ref = get_iterative(strategy).run(ps, pool, job.budget, seed=job.seed, rounds=3, cfg=cfg,
                                              device="cpu")
        for res in (exact[job.key], stacked[job.key]):
            assert res.indices.tolist() == ref.indices.tolist() and res.round_sizes == ref.round_sizes
        strip = lambda log: [{k: v for k, v in r.items() if not k.endswith("_seconds")} for r in log]  # noqa: E731
        assert strip(exact[job.key].info["rounds"]) == strip(ref.info["rounds"])


# ------------------------------------------------------------------ Ctrl-C with worker processes

def test_ctrl_c_during_worker_run_leaves_no_process_and_exits_promptly(tmp_path):
    """A script interrupts run_jobs(workers=2) while the workers start; it must exit at once with no
    child left. Many large queued jobs fill the job queue's pipe, the case that hung on the H100."""
    script = tmp_path / "interrupt.py"
    script.write_text(textwrap.dedent("""
        import multiprocessing, os, signal, sys, threading, time
        from pathlib import Path
        import numpy as np
        from coldseg.data.pairs import PairSet
        from coldseg.segment.runner import SegJob, SegConfig, run_jobs

        if __name__ == "__main__":
            # What a terminal's Ctrl-C reaches. A test run started in the background by a shell without
            # job control (`cmd &`, nohup) inherits SIGINT ignored, and so would this script.
            signal.signal(signal.SIGINT, signal.default_int_handler)
            rng = np.random.default_rng(0)
            x = rng.integers(0, 255, (24, 3, 32, 32), dtype=np.uint8)
            y = (x[:, 0] > 128).astype(np.uint8)
            ids = [f"s{i}" for i in range(24)]
            ps = PairSet(Path("."), ids, x, y, ids, 2)
            jobs = [SegJob(f"j{k}", rng.integers(0, 16, 20000), k) for k in range(20)]   # ~3 MB queued
            cfg = SegConfig(steps=10000, channels=(8, 16, 32), batch_size=4)
            threading.Timer(3.0, os.kill, (os.getpid(), signal.SIGINT)).start()
            try:
                for _ in run_jobs(jobs, ps, np.arange(16, 24), cfg, device="cpu", workers=2, progress=False):
                    pass
            except KeyboardInterrupt:
                print("interrupted; children alive:", len(multiprocessing.active_children()), flush=True)
    """))
    # It exits in 6-14 s (timer at 0.05-8 s, 24 of 24 tries); the limit only catches a hang, and then
    # the stacks of every thread are in the failure message.
    proc = subprocess.Popen([sys.executable, "-X", "faulthandler", str(script)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGABRT)           # faulthandler prints every thread's stack
        out, err = proc.communicate()
        pytest.fail(f"no exit 120 s after the Ctrl-C; where it was:\n{out}\n{err}")
    assert "interrupted; children alive: 0" in out, out + err
    assert proc.returncode == 0

