"""MoCo v2 training throughput against the bare encoder's forward+backward, at the same batch and size.

Prints one JSON line. Five step kinds, built first and warmed up, then timed in ``--rounds`` rounds
that take turns (each round times ``--steps`` steps of every kind, device synchronised at both ends),
so that a machine whose speed drifts (a shared VM, a GPU's clocks) slows all kinds alike; the figures
are each kind's median over rounds, ``*_range`` the lowest and highest round:

- ``moco``: full MoCo steps as coldseg trains (the same ``two_views`` and ``contrast`` functions:
  two augmented views on the device, query forward+backward, key forward, queue, SGD);
- ``moco_ready``: the same steps on views augmented beforehand, so augmentation costs nothing: the
  most MoCo can reach with this encoder, loss and optimiser;
- ``augment``: the two views alone;
- ``bare``: the bare ResNet-18 forward+backward+SGD on ready tensors (the issue's yardstick);
- ``bare_forward``: its forward alone, without gradients (what the key encoder costs).

Images/s count pool images; one MoCo image is two augmented views, so ``ratio_per_view`` (MoCo's
augmented views/s over the bare encoder's images/s, the way ../shared/MISSION.md quotes MoCo
throughput) is twice ``ratio`` (pool images). ``ratio_ready`` is ``ratio``'s ceiling when
augmentation is free. ``augment_share`` and ``key_forward_share`` are the fractions of a MoCo step's
time that the two views and a forward pass of one view cost, timed alone (on a shared machine these are
steadier than the difference between ``moco`` and ``moco_ready``).

    python benchmarks/train_throughput.py --image-size 128 --batch-size 256 --steps 50 [--device cuda]
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import platform
import statistics
import time

import torch

from coldseg.features.augment import AugmentConfig
from coldseg.features.encoder import resnet18
from coldseg.features.moco import MoCo
from coldseg.features.train import _autocast, _cl, contrast, pick_device, reproducible_kernels, two_views


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def _images_per_s(step, dev, batch: int, steps: int) -> float:
    """Time ``steps`` steps (device synchronised at both ends)."""
    _sync(dev)
    t = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(dev)
    return steps * batch / (time.perf_counter() - t)


def interleaved(kinds: dict, dev, batch: int, steps: int, warmup: int, rounds: int) -> dict[str, list[float]]:
    """images/s of each step function in ``kinds`` per round: ``warmup`` untimed steps of each, then
    ``rounds`` rounds in which every kind in turn is timed over ``steps`` steps."""
    for step in kinds.values():
        for _ in range(warmup):
            step()
    out: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(rounds):
        for k, step in kinds.items():
            out[k].append(_images_per_s(step, dev, batch, steps))
    return out


def _pool(dev, size, batch):
    """A random uint8 pool on the device, the CPU generator that drew it, and a device generator for the
    rows and views."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (max(batch * 4, 512), 3, size, size), dtype=torch.uint8, generator=g).to(dev)
    return images, g, torch.Generator(device=dev).manual_seed(1)


def _moco_setup(dev, size, batch, width, bn_splits):
    """The pool, a MoCo model and its optimiser as train_moco builds them (channels_last on CUDA), and
    the device generator."""
    images, g_cpu, g = _pool(dev, size, batch)
    model = MoCo(resnet18(width), 128, 4096, bn_splits=bn_splits, generator=g_cpu).to(dev)
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.encoder_q.parameters(), lr=0.03, momentum=0.9, weight_decay=5e-4)
    return images, model, opt, g


def _rows(g, n, batch, dev):
    return torch.randint(0, n, (batch,), generator=g, device=dev)


def moco_step(dev, size, batch, width, bn_splits=4, profile=False, ready=False):
    """Full MoCo steps (``ready=False``) or the same on views augmented once beforehand (``ready=True``)."""
    images, model, opt, g = _moco_setup(dev, size, batch, width, bn_splits)
    aug = AugmentConfig()
    n = images.shape[0]
    premade = []
    if ready:   # a few batches of views, cycled: augmentation out of the timed loop
        for _ in range(4):
            ids = _rows(g, n, batch, dev)
            premade.append((ids, *two_views(images[ids], g, aug, dev)))
    premade = itertools.cycle(premade)

    def step():
        if ready:
            ids, im_q, im_k = next(premade)
        else:
            ids = _rows(g, n, batch, dev)
            im_q, im_k = two_views(images[ids], g, aug, dev)
        loss = contrast(model, im_q, im_k, g, ids).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    if profile:
        _profile(step, dev)
    return step


def augment_step(dev, size, batch):
    """The two augmented views of a batch alone (pool images/s)."""
    images, _, g = _pool(dev, size, batch)
    aug = AugmentConfig()

    def step():
        two_views(images[_rows(g, images.shape[0], batch, dev)], g, aug, dev)

    return step


def _profile(step, dev, n: int = 5) -> None:
    """Print the operators that take the most device (or CPU) time over ``n`` MoCo steps."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    for _ in range(2):
        step()
    with profile(activities=acts) as prof:
        for _ in range(n):
            step()
        _sync(dev)
    key = "cuda_time_total" if dev.type == "cuda" else "cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=25))


def bare_step(dev, size, batch, width, forward_only=False):
    """The bare encoder on ready tensors: forward+backward+SGD, or (``forward_only``) a no-grad forward."""
    net = resnet18(width).to(dev)
    if dev.type == "cuda":
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=0.03, momentum=0.9)
    x = _cl(torch.randn(batch, 3, size, size, device=dev), dev)

    def step():
        if forward_only:
            with torch.no_grad(), _autocast(dev):
                net(x)
            return
        with _autocast(dev):
            loss = net(x).float().pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds per kind, taken in turns (median reported)")
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--bn-splits", type=int, default=4, help="MoCo's split-BN groups (1 = plain BN)")
    ap.add_argument("--profile", action="store_true", help="also print a per-operator profile of MoCo steps")
    ap.add_argument("--kernels", choices=["reproducible", "fast"], default="reproducible",
                    help="cuDNN as coldseg trains (deterministic algorithms, no autotuning; the default) or "
                         "autotuned with cudnn.benchmark (faster, not bit-reproducible); CPU: no difference")
    a = ap.parse_args()
    for name in ("image_size", "batch_size", "steps", "rounds", "width", "bn_splits"):
        if getattr(a, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(a, name)}")
    if a.warmup < 0:
        ap.error(f"--warmup must be 0 or more, got {a.warmup}")
    dev = pick_device(a.device)
    kernels = reproducible_kernels(dev) if a.kernels == "reproducible" else contextlib.nullcontext()
    if dev.type == "cuda" and a.kernels == "fast":
        torch.backends.cudnn.benchmark = True
    size, batch = a.image_size, a.batch_size
    with kernels:
        kinds = {"moco": moco_step(dev, size, batch, a.width, a.bn_splits, a.profile),
                 "moco_ready": moco_step(dev, size, batch, a.width, a.bn_splits, ready=True),
                 "augment": augment_step(dev, size, batch),
                 "bare_encoder": bare_step(dev, size, batch, a.width),
                 "bare_forward": bare_step(dev, size, batch, a.width, forward_only=True)}
        per_round = interleaved(kinds, dev, batch, a.steps, a.warmup, a.rounds)
    med = {k: statistics.median(v) for k, v in per_round.items()}
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu {platform.machine()} x{torch.get_num_threads()}"
    out = {"device": name, "image_size": size, "batch_size": batch, "steps": a.steps, "rounds": a.rounds,
           "width": a.width, "bn_splits": a.bn_splits, "kernels": a.kernels}
    for k, v in per_round.items():
        out[f"{k}_images_per_s"] = round(med[k], 1)
        out[f"{k}_range"] = [round(min(v), 1), round(max(v), 1)]
    moco, ready, bare = med["moco"], med["moco_ready"], med["bare_encoder"]
    out.update({"ratio": round(moco / bare, 3), "ratio_per_view": round(2 * moco / bare, 3),
                "ratio_ready": round(ready / bare, 3), "augment_share": round(moco / med["augment"], 3),
                "key_forward_share": round(moco / med["bare_forward"], 3),
                "note": "images/s count pool images; each MoCo image is two augmented views"})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
