"""MoCo v2 training throughput against the bare encoder's forward+backward, at the same batch and size.

Prints one JSON line: images/s of full MoCo steps (augmentation of two views on the device, query
forward+backward, key forward, queue, SGD) and of the bare ResNet-18 forward+backward on ready
tensors. Their ratio shows whether augmentation and data feeding are the bottleneck.

    python benchmarks/train_throughput.py --image-size 128 --batch-size 256 --steps 50 [--device cuda]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import platform
import time

import torch

from coldseg.features.augment import AugmentConfig, base_view, normalize
from coldseg.features.encoder import resnet18
from coldseg.features.moco import MoCo
from coldseg.features.train import _autocast, _cl, pick_device, reproducible_kernels


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def _images_per_s(step, dev, batch: int, steps: int, warmup: int) -> float:
    """Run ``warmup`` untimed steps, then time ``steps`` steps (device synchronised at both ends)."""
    for _ in range(warmup):
        step()
    _sync(dev)
    t = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(dev)
    return steps * batch / (time.perf_counter() - t)


def bench_moco(dev, size, batch, steps, warmup, width, bn_splits=4, profile=False):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (max(batch * 4, 512), 3, size, size), dtype=torch.uint8, generator=g).to(dev)
    model = MoCo(resnet18(width), 128, 4096, bn_splits=bn_splits, generator=g).to(dev)
    g = torch.Generator(device=dev).manual_seed(1)
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.encoder_q.parameters(), lr=0.03, momentum=0.9, weight_decay=5e-4)
    aug = AugmentConfig()
    n = images.shape[0]

    def step():
        idx = torch.randint(0, n, (batch,), generator=g, device=dev)
        x = images[idx].float().div_(255)
        q = _cl(normalize(base_view(x, g, aug)), dev)
        k = _cl(normalize(base_view(x, g, aug)), dev)
        with _autocast(dev):
            loss = model(q, k, shuffle=torch.randperm(batch, generator=g, device=dev))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    if profile:
        _profile(step, dev)
    return _images_per_s(step, dev, batch, steps, warmup)


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


def bench_bare(dev, size, batch, steps, warmup, width):
    net = resnet18(width).to(dev)
    if dev.type == "cuda":
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=0.03, momentum=0.9)
    x = _cl(torch.randn(batch, 3, size, size, device=dev), dev)

    def step():
        with _autocast(dev):
            loss = net(x).float().pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return _images_per_s(step, dev, batch, steps, warmup)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--bn-splits", type=int, default=4, help="MoCo's split-BN groups (1 = plain BN)")
    ap.add_argument("--profile", action="store_true", help="also print a per-operator profile of MoCo steps")
    ap.add_argument("--kernels", choices=["reproducible", "fast"], default="reproducible",
                    help="cuDNN as coldseg trains (deterministic algorithms, no autotuning; the default) or "
                         "autotuned with cudnn.benchmark (faster, not bit-reproducible); CPU: no difference")
    a = ap.parse_args()
    dev = pick_device(a.device)
    kernels = reproducible_kernels(dev) if a.kernels == "reproducible" else contextlib.nullcontext()
    if dev.type == "cuda" and a.kernels == "fast":
        torch.backends.cudnn.benchmark = True
    with kernels:
        moco = bench_moco(dev, a.image_size, a.batch_size, a.steps, a.warmup, a.width, a.bn_splits, a.profile)
        bare = bench_bare(dev, a.image_size, a.batch_size, a.steps, a.warmup, a.width)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu {platform.machine()} x{torch.get_num_threads()}"
    print(json.dumps({"device": name, "image_size": a.image_size, "batch_size": a.batch_size, "steps": a.steps,
                      "width": a.width, "bn_splits": a.bn_splits, "kernels": a.kernels,
                      "moco_images_per_s": round(moco, 1),
                      "bare_encoder_images_per_s": round(bare, 1), "ratio": round(moco / bare, 3),
                      "note": "images/s counts pool images; each MoCo image is two augmented views"}))


if __name__ == "__main__":
    main()
