"""MoCo v2 training on the unlabeled pool, with the augmentation validation standard (eq. 7).

Schedule: ``epochs`` epochs of SGD (momentum 0.9, cosine learning rate), lengthened on small pools to at
least ``min_steps`` SGD steps (:func:`moco_epochs`): what the encoder learns tracks the number of
updates, not of epochs (kvasir_seg, 998 images at 64 px, the same 50 epochs, seed 0, one run each:
batch 128 = 350 steps left the loss at chance and the feature check's knn_overlap at 0.031; batch 32 =
1550 steps gave 0.113, and 3100 steps 0.223; docs/results.md). After the first
``select_at`` fraction of them (phase 1, plain MoCo v2 views) the model scores every candidate
augmentation t by its MoCo loss L(θ | t) (see :func:`candidate_losses`), keeps t* = argmax, and the
remaining epochs (phase 2) append t* to the view pipeline with probability ``AugmentConfig.extra_p``.

Every step also adds, for each query, the probability it gave its positive key to that image's tally
(``MoCo.confidence_sum``/``confidence_count``; summed over the ranks at each epoch's end): the
per-image confidence that the ``hard-contrast`` strategy reads (``MoCo.confidence``).

Every epoch ends with an atomic checkpoint (model, optimiser, queue, generator states, phase-1 result);
``resume=True`` continues from it and, on CPU, gives bit-identical weights to an uninterrupted run.

Pixels come through a :class:`~coldseg.data.decoded.PixelSource`: the whole pool on the device when it
fits, else streamed from its memmap by a DataLoader; both feed the same rows in the same order. Under
torchrun every rank trains its share of each global batch (DDP; see distributed.py).
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from coldseg.data.stream import LoaderConfig, PixelSource
from coldseg.features.augment import (
    CANDIDATES, AugmentConfig, base_view, candidate_names, normalize, weak_view,
)
from coldseg.features.distributed import (
    SINGLE, DistInfo, all_gather_object, check_device, average_bn_statistics, barrier, broadcast_object, key_positions,
    mean_over_ranks, moco_step, sum_over_ranks, wrap_query_encoder,
)
from coldseg.features.encoder import resnet18
from coldseg.features.moco import FEATURE_LAYERS, MoCo
from coldseg.io.atomic import atomic_write


@dataclass
class MocoConfig:
    """Settings of the self-supervised encoder; every field enters the features cache key."""

    image_size: int = 128
    epochs: int = 30
    min_steps: int = 3000        # train at least this many SGD steps: small pools get more epochs
    batch_size: int = 32         # small: the queue supplies the negatives, and small pools need steps
    lr: float = 0.06             # for batch 256; scaled linearly with batch_size
    weight_decay: float = 5e-4
    dim: int = 128               # MoCo output dimension
    queue: int = 4096            # K, capped at half the pool (see MoCo docs in README)
    momentum: float = 0.99       # m of the key encoder
    temperature: float = 0.2     # T
    width: int = 64              # ResNet-18 base width (64 = the standard ResNet-18)
    bn_splits: int = 4           # shuffle-BN groups on one device
    candidates: str = "auto"     # eq. 7 candidate set: 'auto', 'none' or comma-separated names
    select_at: float = 0.5       # fraction of epochs before the eq. 7 choice
    eval_images: int = 1024      # images scored per candidate (a fixed random subset when larger)
    # 'backbone': the pooled ResNet output (8 · width = 512-d), chosen on validation splits (docs/results.md,
    # ninth session); 'head': the projection head's output (dim), as the paper's released features
    feature_layer: str = "backbone"
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        if self.feature_layer not in FEATURE_LAYERS:
            raise ValueError(f"feature_layer={self.feature_layer!r}: choose {', '.join(FEATURE_LAYERS)}")
        if self.candidates != "none":   # an unknown name fails here, before any image is read
            try:
                candidate_names(False, self.candidates)
            except ValueError as e:
                raise ValueError(f"candidates={self.candidates!r}: {e}") from None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def pick_device(device: str | torch.device | None = None) -> torch.device:
    check_device(device)
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def queue_size(cfg: MocoConfig, n: int) -> int:
    """K for a pool of ``n`` images: ``cfg.queue``, capped at half the pool, never below one batch."""
    return int(max(cfg.batch_size, min(cfg.queue, n // 2)))


def build_model(cfg: MocoConfig, n: int, gen: torch.Generator) -> MoCo:
    K = queue_size(cfg, n)
    return MoCo(resnet18(cfg.width), cfg.dim, K, cfg.momentum, cfg.temperature, bn_splits=cfg.bn_splits,
                generator=gen, pool_size=n)


def initial_model(cfg: MocoConfig, n: int, seed: int) -> MoCo:
    """The MoCo model as training with ``seed`` starts it (on the CPU); the global generator is untouched."""
    g_init = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # weight init draws from the global generator: fork it
        torch.manual_seed(seed)
        return build_model(cfg, n, g_init)


def _steps_per_epoch(cfg: MocoConfig, n: int) -> int:
    return n // min(cfg.batch_size, n)      # a pool below one batch is one step of the whole pool


def moco_epochs(cfg: MocoConfig, n: int) -> int:
    """Epochs trained on a pool of ``n`` (≥ 1) images: ``cfg.epochs``, or more when a pool so small that
    ``epochs`` would take fewer than ``cfg.min_steps`` SGD steps (one step = one batch)."""
    return max(cfg.epochs, math.ceil(cfg.min_steps / _steps_per_epoch(cfg, n)))


def moco_steps(cfg: MocoConfig, n: int) -> int:
    """SGD steps trained on a pool of ``n`` (≥ 1) images."""
    return _steps_per_epoch(cfg, n) * moco_epochs(cfg, n)


def _atomic_save(obj: Any, path: Path) -> None:
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def _lr_at(cfg: MocoConfig, step: int, total: int, batch: int) -> float:
    base = cfg.lr * batch / 256
    return 0.5 * base * (1 + math.cos(math.pi * step / max(1, total)))


@torch.no_grad()
def candidate_losses(model: MoCo, images: PixelSource | torch.Tensor | np.ndarray, names: list[str], *, seed: int,
                     batch: int, device: torch.device, eval_images: int) -> dict[str, float]:
    """L_MoCo(θ | t) for each candidate t: mean InfoNCE of two independent t-views of each image
    (each t applied to a randomly flipped full image), against the trained queue, no update.

    The same images and the same generator seed are used for every candidate, so only t differs.
    """
    model.eval()
    src = images if isinstance(images, PixelSource) else PixelSource(images, device)
    n = len(src)
    sub = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[: min(n, eval_images)]
    xs = list(src.batches([sub[s : s + batch] for s in range(0, len(sub), batch)]))  # (b, 3, S, S) uint8
    out = {}
    for name in names:
        gen = torch.Generator(device=device).manual_seed(seed + 1)
        t = CANDIDATES[name]
        total = torch.zeros((), device=device)
        for ib, xb in zip(sub.split(batch), xs):
            x = xb.to(device).float().div_(255)
            v1 = normalize(t(weak_view(x, gen), gen))
            v2 = normalize(t(weak_view(x, gen), gen))
            with _autocast(device):
                total += model.loss_without_update(_cl(v1, device), _cl(v2, device), ids=ib).sum()
        out[name] = float(total) / len(sub)
    model.train()
    return out


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


@contextlib.contextmanager
def reproducible_kernels(device: torch.device):
    """On CUDA: cuDNN limited to deterministic algorithms and choosing them without timing runs
    (``cudnn.deterministic`` on, ``cudnn.benchmark`` off), so one seed gives the same weights on the same
    GPU, driver and torch; the previous settings are restored on exit. Nothing changes on the CPU, whose
    kernels are deterministic for a given thread count and instruction set.

    Without it cuDNN may pick convolution backward algorithms that sum with atomics, whose order varies
    run to run; MoCo training amplifies such last-bit differences into another encoder within a few
    dozen steps (benchmarks/numerics_drift.py), and so into another pick list.
    """
    if device.type != "cuda":
        yield
        return
    cudnn = torch.backends.cudnn
    before = cudnn.deterministic, cudnn.benchmark
    cudnn.deterministic, cudnn.benchmark = True, False
    try:
        yield
    finally:
        cudnn.deterministic, cudnn.benchmark = before


def _cl(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if device.type == "cuda" else x


def two_views(xb: torch.Tensor, g_aug: torch.Generator, aug: AugmentConfig,
              dev: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A single process's augmentation half of a MoCo step: uint8 rows (B, 3, S, S) on ``dev`` ->
    the normalised query and key views, in the memory format the encoders run in."""
    x = xb.float().div_(255)
    return _cl(normalize(base_view(x, g_aug, aug)), dev), _cl(normalize(base_view(x, g_aug, aug)), dev)


def contrast(model: MoCo, im_q: torch.Tensor, im_k: torch.Tensor, g_aug: torch.Generator,
             ids: torch.Tensor | None) -> torch.Tensor:
    """A single process's encoder half of a MoCo step (key shuffle drawn from ``g_aug`` after the views):
    the InfoNCE term of each query (B,), with the key encoder and queue updated. Training and
    benchmarks/train_throughput.py both step through :func:`two_views` and this."""
    dev = im_q.device
    shuffle = torch.randperm(im_q.shape[0], generator=g_aug, device=dev)
    with _autocast(dev):
        return model(im_q, im_k, shuffle=shuffle, ids=ids, reduction="none")


def _rank_seed(seed: int, rank: int) -> int:
    """Augmentation seed of a rank: rank 0 draws as a single process does, the others apart."""
    return seed if rank == 0 else seed + 1_000_003 * rank


def _epoch_batches(order: torch.Tensor, steps: int, batch: int, g_order: torch.Generator, info: DistInfo
                   ) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """Pool rows of each step for this rank, and the shared key permutations (steps, B) under DDP.

    One process: row batches of ``order``. Rank r of W: its b = B/W query rows, then the b rows whose
    keys it encodes (shuffle-BN by index, see distributed.py)."""
    if not info.active:
        return [order[s * batch : (s + 1) * batch] for s in range(steps)], None
    b, r = batch // info.world_size, info.rank
    perms = torch.rand((steps, batch), generator=g_order, device=order.device).argsort(1)   # (steps, B)
    out = []
    for s in range(steps):
        g = order[s * batch : (s + 1) * batch]                                                 # (B,)
        out.append(torch.cat([g[r * b : (r + 1) * b], g[key_positions(perms[s], info)]]))       # (2b,)
    return out, perms


def train_moco(images: torch.Tensor | np.ndarray | PixelSource, cfg: MocoConfig, *, seed: int,
               grayscale: bool = False, device: str | torch.device | None = None, checkpoint: Path | None = None,
               resume: bool = False, progress: bool = True, stop_after_epoch: int | None = None,
               loader: LoaderConfig | None = None, dist: DistInfo | None = None) -> tuple[MoCo, dict[str, Any]]:
    """Train MoCo v2 on ``images`` (n, 3, S, S) uint8 (an array, a memmap, a tensor or a
    :class:`PixelSource`). Returns the model and a training log for the manifest (loss per epoch,
    eq. 7 losses and winner, images/s, device).

    loader: whole pool on the device or streamed (speed and memory only; on CPU streamed and in-memory
    training give bit-identical weights). dist: this rank under torchrun (see distributed.py); every
    rank must call with the same arguments; only rank 0 writes the checkpoint.
    stop_after_epoch: end after that many epochs (tests use it to simulate an interruption).
    On CUDA the training runs under :func:`reproducible_kernels`.
    """
    dev = pick_device(device)
    with reproducible_kernels(dev):
        return _train_moco(images, cfg, seed=seed, grayscale=grayscale, dev=dev, checkpoint=checkpoint,
                           resume=resume, progress=progress, stop_after_epoch=stop_after_epoch, loader=loader,
                           dist=dist)


def _train_moco(images, cfg: MocoConfig, *, seed: int, grayscale: bool, dev: torch.device,
                checkpoint: Path | None, resume: bool, progress: bool, stop_after_epoch: int | None,
                loader: LoaderConfig | None, dist: DistInfo | None) -> tuple[MoCo, dict[str, Any]]:
    info = dist or SINGLE
    W = info.world_size
    src = images if isinstance(images, PixelSource) else PixelSource(images, dev, loader,
                                                                     local_world=info.local_world_size)
    n = len(src)
    if n < 2:
        raise ValueError(f"MoCo needs at least 2 images to contrast; the pool has {n}")
    batch = min(cfg.batch_size, n)
    if batch % W:
        raise ValueError(f"batch size {batch} does not split evenly over {W} processes; use a multiple of {W} "
                         f"(e.g. --batch-size {W * max(1, batch // W)})")
    steps_per_epoch = _steps_per_epoch(cfg, n)
    epochs = moco_epochs(cfg, n)
    total_steps = steps_per_epoch * epochs
    names = [] if cfg.candidates == "none" else candidate_names(grayscale, cfg.candidates)
    select_epoch = int(round(cfg.select_at * epochs)) if names else -1

    model = initial_model(cfg, n, seed).to(dev)
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.encoder_q.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    g_aug = torch.Generator(device=dev).manual_seed(_rank_seed(seed + 1, info.rank))  # view parameters
    g_order = torch.Generator(device=dev).manual_seed(seed + 2)  # epoch order (and key shuffle), all ranks
    log: dict[str, Any] = {"loss": [], "augmentation": None, "images_per_s": [], "device": str(dev),
                           "world_size": W}
    start = 0
    if resume and checkpoint is not None and checkpoint.exists():
        st = torch.load(checkpoint, map_location=dev, weights_only=False)
        if st["config"] != cfg.to_dict() or st["seed"] != seed:
            raise ValueError(f"checkpoint {checkpoint} was made with other settings; rerun without --resume")
        if st.get("world_size", 1) != W:
            raise ValueError(f"checkpoint {checkpoint} was made by {st.get('world_size', 1)} process(es), this run "
                             f"has {W}; resume with the same number or rerun without --resume")
        if "confidence_sum" not in st["model"]:
            raise ValueError(f"checkpoint {checkpoint} was made by an older coldseg that did not record the per-image "
                             "confidence; rerun without --resume")
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        g_aug.set_state(st["g_aug_ranks"][info.rank] if W > 1 else st["g_aug"])
        g_order.set_state(st["g_order"])
        log, start = st["log"], st["epoch"]
    ddp_q = wrap_query_encoder(model, dev) if W > 1 else None
    aug = AugmentConfig(**{**asdict(cfg.augment), "gray_p": 0.0 if grayscale else cfg.augment.gray_p})
    if log["augmentation"]:
        aug = aug.with_extra(log["augmentation"]["winner"])

    model.train()
    show = progress and info.is_main
    bar = tqdm(range(start, epochs), desc="MoCo", unit="epoch", disable=not show, initial=start,
               total=epochs)
    for epoch in bar:
        if epoch == select_epoch and log["augmentation"] is None:
            losses = candidate_losses(model, src, names, seed=seed + 3, batch=batch, device=dev,
                                      eval_images=cfg.eval_images)
            losses = broadcast_object(losses, info)  # ranks agree even on a near tie
            winner = max(losses, key=losses.get)
            log["augmentation"] = {"candidates": losses, "winner": winner, "chosen_after_epoch": epoch}
            aug = aug.with_extra(winner)
            if show:
                bar.write(f"eq. 7: hardest augmentation = {winner} "
                          f"({', '.join(f'{k} {v:.3f}' for k, v in sorted(losses.items(), key=lambda kv: -kv[1]))})")
        t0 = time.perf_counter()
        order = torch.randperm(n, generator=g_order, device=dev)
        rows, perms = _epoch_batches(order, steps_per_epoch, batch, g_order, info)
        run_loss = torch.zeros((), device=dev)
        tally = torch.zeros((2, n), dtype=torch.float64, device=dev)   # this epoch: Σ p(positive), count
        for s, xb in enumerate(src.batches(rows)):
            step = epoch * steps_per_epoch + s
            ids = order[s * batch : (s + 1) * batch]        # (B,) pool rows of this global batch
            for grp in opt.param_groups:
                grp["lr"] = _lr_at(cfg, step, total_steps, batch)
            if ddp_q is None:
                im_q, im_k = two_views(xb, g_aug, aug, dev)
                per_query = contrast(model, im_q, im_k, g_aug, ids)                     # (B,)
                mine = ids
            else:
                b = batch // W
                x = xb.float().div_(255)
                im_q = _cl(normalize(base_view(x[:b], g_aug, aug)), dev)
                im_k = _cl(normalize(base_view(x[b:], g_aug, aug)), dev)
                with _autocast(dev):
                    per_query = moco_step(model, ddp_q, im_q, im_k, perms[s], info, ids=ids, reduction="none")
                mine = ids[info.rank * b : (info.rank + 1) * b]                             # (b,)
            loss = per_query.mean()
            tally[0].index_add_(0, mine, torch.exp(-per_query.detach().double()))
            tally[1].index_add_(0, mine, torch.ones_like(tally[1][: len(mine)]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            run_loss += loss.detach()
            if show and (s % 20 == 19 or s == steps_per_epoch - 1):
                bar.set_postfix(loss=f"{float(run_loss) / (s + 1):.3f}",
                                img_s=f"{(s + 1) * batch / (time.perf_counter() - t0):.0f}")
        tally = sum_over_ranks(tally, info)      # every rank adds the same epoch tally
        model.confidence_sum += tally[0]
        model.confidence_count += tally[1]
        if W > 1:
            average_bn_statistics(model, info)  # every rank now holds the same model
            run_loss = mean_over_ranks(run_loss, info)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        log["loss"].append(float(run_loss) / steps_per_epoch)
        log["images_per_s"].append(steps_per_epoch * batch / dt)
        if checkpoint is not None:
            g_ranks = all_gather_object(g_aug.get_state(), info) if W > 1 else None
            if info.is_main:
                _atomic_save({"model": model.state_dict(), "opt": opt.state_dict(), "g_aug": g_aug.get_state(),
                              "g_order": g_order.get_state(), "log": log, "epoch": epoch + 1,
                              "config": cfg.to_dict(), "seed": seed, "world_size": W, "g_aug_ranks": g_ranks},
                             checkpoint)
        if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch:
            break
    bar.close()
    barrier(info)  # the checkpoint is on disk before any rank goes on
    return model, log


def summarize_log(log: dict[str, Any]) -> dict[str, Any]:
    """The training log as the manifest shows it (images/s as the median over epochs)."""
    ips = log.get("images_per_s") or []
    return {
        "final_loss": log["loss"][-1] if log.get("loss") else None,
        "loss_per_epoch": [round(v, 5) for v in log.get("loss", [])],
        "images_per_s_median": float(np.median(ips)) if ips else None,
        "device": log.get("device"),
    }


