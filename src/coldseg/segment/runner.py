"""Run many segmentation trainings (strategy × ratio × seed) and score each on a fixed test set.

``run_jobs`` yields every job as soon as it finishes, so a sweep can save results immediately.

CPU: jobs run one after another in this process (a CPU is saturated by one training's threads).

CUDA, default (``stack``, added after the H100 run): jobs are cut into chunks of up to ``stack``
(default 8) and each chunk is trained as one grouped network in this process
(:func:`coldseg.segment.stacked.train_stacked`), then each of its models is scored and yielded in job
order. Worker processes time-slice a GPU without MPS, so their kernels never overlapped and 8+8 of
them did not finish one 1500-step training in 150 s on an H100; stacking makes each kernel launch do
the work of ``stack`` models instead. Each model follows its own seed exactly as a lone training
would (same init, batches, augmentation; float rounding aside), so a result does not depend on which
jobs shared its chunk. A job's ``train_seconds`` is its chunk's training time divided by the chunk
size (the chunk trains as one).

``workers`` > 1 (the earlier CUDA default, kept for comparison): ``workers`` processes
(``torch.multiprocessing`` spawn), each holding the whole pair set on the GPU and taking jobs from a
queue. They were chosen first because they need no change to the training code, launch kernels from
separate interpreters (no GIL contention), overlap one job's CPU-side scoring (HD95) with other jobs'
GPU work, and confine a crash to one job; without MPS, though, the GPU runs one process at a time.
An exception in a worker stops the run and is raised here as :class:`SegJobError` with the job key
and the worker's traceback; a worker that dies without a word (killed, out of memory) is reported
the same way. On every exit (Ctrl-C included) the workers are terminated, and the job queue's
feeder thread is never joined (joining it hung the interpreter at exit on the H100).

``predict_proba`` (optionally with MC dropout) and ``bottleneck_features`` serve the iterative
baselines (Bayesian / MC-dropout uncertainty, core-set on U-Net features).
"""
from __future__ import annotations

import os
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from coldseg.data.pairs import PairSet
from coldseg.segment.metrics import evaluate
from coldseg.segment.stacked import train_stacked
from coldseg.segment.train import SegConfig, as_tensor, normalise, resolve_device, train_segmenter
from coldseg.segment.unet import bottleneck_module, probabilities
from coldseg.segment.workers import run_pool, serve, worker_device


@dataclass
class SegJob:
    key: str                 # caller's name for the job, e.g. "ca/10%/seed0"
    train_idx: np.ndarray    # indices into the PairSet (the labelled subset)
    seed: int                # seeds weight init, batch sampling, augmentation, dropout


class SegJobError(RuntimeError):
    """A training job failed (in this process or in a worker); the message holds its traceback."""


def _device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return f"{dev} ({torch.cuda.get_device_name(dev)})"
    return str(dev)


def _run_one(x_all: torch.Tensor, y_all: torch.Tensor, test_x: torch.Tensor, test_y: np.ndarray,
             train_idx: np.ndarray, seed: int, cfg: SegConfig, dev: torch.device,
             n_classes: int) -> dict:
    t0 = time.perf_counter()
    idx = torch.as_tensor(train_idx, dtype=torch.long, device=dev)
    model = train_segmenter(x_all[idx], y_all[idx], cfg, seed=seed, device=dev, n_classes=n_classes)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return _score(model, test_x, test_y, train_idx, seed, cfg, dev, n_classes, time.perf_counter() - t0)


def _score(model: nn.Module, test_x: torch.Tensor, test_y: np.ndarray, train_idx: np.ndarray,
           seed: int, cfg: SegConfig, dev: torch.device, n_classes: int, train_seconds: float) -> dict:
    t1 = time.perf_counter()
    scores = evaluate(model, test_x, test_y, device=dev, n_classes=n_classes)
    return {"dice_mean": float(scores["dice"].mean()), "hd95_mean": float(scores["hd95"].mean()),
            "dice": scores["dice"], "hd95": scores["hd95"], "train_seconds": train_seconds,
            "eval_seconds": time.perf_counter() - t1, "n_train": int(len(train_idx)),
            "steps": cfg.steps, "seed": int(seed), "device": _device_name(dev)}


def _worker(rank: int, jobs_q, results_q, device: str, images: torch.Tensor, masks: torch.Tensor,
            test_idx: np.ndarray, cfg: SegConfig, n_classes: int, threads: int) -> None:
    """Worker process: put the data on ``device`` once, then train jobs until the None sentinel."""

    def setup():
        dev = worker_device(device, threads)
        x_all, y_all = images.to(dev), masks.to(dev)
        t = torch.as_tensor(test_idx, dtype=torch.long, device=dev)
        return dev, x_all, y_all, x_all[t], masks[torch.as_tensor(test_idx)].numpy()

    def handle(state, payload):
        dev, x_all, y_all, test_x, test_y = state
        train_idx, seed = payload
        return _run_one(x_all, y_all, test_x, test_y, train_idx, seed, cfg, dev, n_classes)

    serve(rank, jobs_q, results_q, setup, handle)


def _check_jobs(jobs: Sequence[SegJob], n: int, test_idx: np.ndarray) -> None:
    test = set(test_idx.tolist())
    if not test:
        raise ValueError("test_idx is empty; pass the test side of pool_test_split")
    if min(test) < 0 or max(test) >= n:
        raise ValueError(f"test_idx holds indices outside 0..{n - 1}")
    for j in jobs:
        t = np.asarray(j.train_idx)
        if t.ndim != 1 or len(t) == 0:
            raise ValueError(f"job {j.key!r}: train_idx must be a non-empty 1-D index array")
        if t.min() < 0 or t.max() >= n:
            raise ValueError(f"job {j.key!r}: train_idx holds indices outside 0..{n - 1}")
        leak = test.intersection(t.tolist())
        if leak:
            raise ValueError(f"job {j.key!r}: {len(leak)} training image(s) are in the test set "
                             f"(e.g. index {min(leak)}); select from the pool side only")


def resolve_parallelism(dev: torch.device, workers: int | None, stack: int | None) -> tuple[int, int]:
    """``(workers, stack)`` after defaults; at most one of them is > 1.

    Neither given: CPU (1, 1) (one job at a time); CUDA (1, 8) (8 models stacked in this process).
    ``workers`` alone: that many processes, no stacking (``workers=1``: one job at a time).
    ``stack`` alone: that many stacked models; ``stack=1`` on CUDA: the worker-process default
    ``min(8, cpu_count // 2)``.
    """
    for name, v in (("workers", workers), ("stack", stack)):
        if v is not None and int(v) < 1:
            raise ValueError(f"{name}={v} must be at least 1")
    if workers is not None and stack is not None and workers > 1 and stack > 1:
        raise ValueError(f"workers={workers} and stack={stack}: choose worker processes or stacked "
                         "models, not both (set the other to 1)")
    if stack is None:
        stack = 8 if dev.type == "cuda" and workers is None else 1
    if workers is None:
        workers = min(8, max(1, (os.cpu_count() or 2) // 2)) if dev.type == "cuda" and stack == 1 else 1
    return int(workers), int(stack)


def run_jobs(jobs: Sequence[SegJob], pairs: PairSet, test_idx: np.ndarray, cfg: SegConfig, *,
             device: str | torch.device | None = None, workers: int | None = None,
             stack: int | None = None, progress: bool = True) -> Iterator[tuple[SegJob, dict]]:
    """Train and score every job; yield ``(job, result)`` in completion order.

    result: ``dice_mean``, ``hd95_mean``, ``dice`` (n_test,), ``hd95`` (n_test,), ``train_seconds``,
    ``device`` (and ``eval_seconds``, ``n_train``, ``steps``, ``seed``, ``stack``).
    ``stack`` > 1: chunks of up to ``stack`` jobs trained together in this process, yielded in job
    order (``train_seconds`` = chunk time / chunk size). ``workers`` > 1: worker processes.
    Defaults (:func:`resolve_parallelism`): CPU one job at a time, CUDA ``stack=8``.
    """
    jobs = list(jobs)
    test_idx = np.asarray(test_idx, dtype=np.int64)
    _check_jobs(jobs, len(pairs), test_idx)
    dev = resolve_device(device)
    workers, stack = resolve_parallelism(dev, workers, stack)
    if not jobs:
        return
    workers = min(workers, len(jobs))
    bar = tqdm(total=len(jobs), desc="segmentation jobs", unit="job", disable=not progress)
    if stack > 1:
        results = _run_stacked(jobs, pairs, test_idx, cfg, dev, stack)
    elif workers == 1:
        results = _run_inline(jobs, pairs, test_idx, cfg, dev)
    else:
        results = _run_pool(jobs, pairs, test_idx, cfg, dev, workers)
    try:
        for job, res in results:
            bar.update(1)
            bar.set_postfix(dice=f"{res['dice_mean']:.3f}", key=job.key)
            yield job, res
    finally:
        results.close()      # runs the worker pool's cleanup now, even when our consumer stopped early
        bar.close()


def _run_stacked(jobs, pairs, test_idx, cfg, dev, stack) -> Iterator[tuple[SegJob, dict]]:
    """Chunks of up to ``stack`` jobs, each trained as one stacked network here (see the module doc)."""
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    x_all, y_all = as_tensor(pairs.images, dev), as_tensor(pairs.masks, dev)
    test_x = x_all[torch.as_tensor(test_idx, device=dev)]
    test_y = pairs.masks[test_idx]
    for start in range(0, len(jobs), stack):
        chunk = jobs[start:start + stack]
        t0 = time.perf_counter()
        try:
            models = train_stacked(x_all, y_all, [np.asarray(j.train_idx) for j in chunk],
                                   [int(j.seed) for j in chunk], cfg, device=dev,
                                   n_classes=pairs.n_classes)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
        except Exception as e:
            keys = ", ".join(repr(j.key) for j in chunk)
            raise SegJobError(f"job {keys} (trained together) failed on {dev}: "
                              f"{type(e).__name__}: {e}") from e
        per_job = (time.perf_counter() - t0) / len(chunk)      # the chunk trains as one
        for job, model in zip(chunk, models):
            try:
                res = _score(model, test_x, test_y, np.asarray(job.train_idx), job.seed, cfg, dev,
                             pairs.n_classes, per_job)
            except Exception as e:
                raise SegJobError(f"job {job.key!r} failed on {dev}: {type(e).__name__}: {e}") from e
            yield job, {**res, "stack": len(chunk)}
        del models


def _run_inline(jobs, pairs, test_idx, cfg, dev) -> Iterator[tuple[SegJob, dict]]:
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    x_all, y_all = as_tensor(pairs.images, dev), as_tensor(pairs.masks, dev)
    test_x = x_all[torch.as_tensor(test_idx, device=dev)]
    test_y = pairs.masks[test_idx]
    for job in jobs:
        try:
            res = _run_one(x_all, y_all, test_x, test_y, np.asarray(job.train_idx), job.seed, cfg,
                           dev, pairs.n_classes)
        except Exception as e:
            raise SegJobError(f"job {job.key!r} failed on {dev}: {type(e).__name__}: {e}") from e
        yield job, res


def _run_pool(jobs, pairs, test_idx, cfg, dev, workers) -> Iterator[tuple[SegJob, dict]]:
    images = torch.from_numpy(pairs.images).share_memory_()
    masks = torch.from_numpy(pairs.masks).share_memory_()
    threads = 2 if dev.type == "cuda" else max(1, (os.cpu_count() or 1) // workers)
    payloads = [(np.asarray(job.train_idx), int(job.seed)) for job in jobs]
    for jno, res in run_pool(_worker, (str(dev), images, masks, test_idx, cfg, pairs.n_classes, threads),
                             payloads, workers, label="segmentation", where=str(dev),
                             describe=lambda j: repr(jobs[j].key), error=SegJobError):
        yield jobs[jno], res


def _dropout_on(model: nn.Module) -> int:
    """Eval mode everywhere except dropout layers; returns how many dropout layers have p > 0."""
    model.eval()
    n = 0
    for mod in model.modules():
        if isinstance(mod, nn.modules.dropout._DropoutNd):
            mod.train()
            n += mod.p > 0
    return n


@torch.no_grad()
def predict_proba(model: nn.Module, images_u8: np.ndarray | torch.Tensor, *,
                  device: str | torch.device | None = None, mc_samples: int = 0,
                  reduce: str = "mean", batch_size: int = 64, seed: int = 0) -> np.ndarray:
    """Class probabilities, float32 numpy.

    mc_samples=0: (n, C, S, S) from the model in eval mode (binary: C = 2, [1 - p, p]).
    mc_samples=T>0: T passes with dropout on and BatchNorm in eval mode (MC dropout), seeded;
    ``reduce="mean"`` -> (n, C, S, S) mean over passes, ``reduce="stack"`` -> (T, n, C, S, S).
    """
    if reduce not in ("mean", "stack"):
        raise ValueError(f"reduce={reduce!r}; use 'mean' or 'stack'")
    if mc_samples < 0:
        raise ValueError(f"mc_samples={mc_samples} must be >= 0")
    dev = resolve_device(device)
    x_all = as_tensor(images_u8, dev)
    cuda = dev.type == "cuda"
    fmt = torch.channels_last if cuda else torch.contiguous_format
    passes = max(1, mc_samples)
    if mc_samples and not _dropout_on(model):
        warnings.warn("MC dropout on a model without dropout gives identical samples; train it with "
                      "SegConfig(dropout=0.1) or similar", stacklevel=2)
    elif not mc_samples:
        model.eval()
    fork_devices = [dev.index if dev.index is not None else torch.cuda.current_device()] if cuda else []
    stacked = bool(mc_samples) and reduce == "stack"
    out = []
    try:
        with torch.random.fork_rng(devices=fork_devices):
            torch.manual_seed(seed)                      # dropout masks
            for i in range(0, x_all.shape[0], batch_size):
                x = normalise(x_all[i:i + batch_size]).contiguous(memory_format=fmt)
                ps = []
                for _ in range(passes):
                    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cuda):
                        ps.append(probabilities(model(x)))                 # (b, C, S, S)
                p = torch.stack(ps)                                        # (T, b, C, S, S)
                out.append((p if stacked else p.mean(0)).cpu())
    finally:
        model.eval()
    return torch.cat(out, dim=1 if stacked else 0).numpy()


@torch.no_grad()
def bottleneck_features(model: nn.Module, images_u8: np.ndarray | torch.Tensor, *,
                        device: str | torch.device | None = None, batch_size: int = 64) -> np.ndarray:
    """(n, d) float32: the deepest encoder activations, averaged over space (d = channels[-1])."""
    dev = resolve_device(device)
    x_all = as_tensor(images_u8, dev)
    cuda = dev.type == "cuda"
    fmt = torch.channels_last if cuda else torch.contiguous_format
    grabbed: list[torch.Tensor] = []
    hook = bottleneck_module(model).register_forward_hook(
        lambda _m, _i, o: grabbed.append(o.float().mean(dim=(2, 3))))     # (b, d)
    model.eval()
    try:
        for i in range(0, x_all.shape[0], batch_size):
            x = normalise(x_all[i:i + batch_size]).contiguous(memory_format=fmt)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cuda):
                model(x)
    finally:
        hook.remove()
    return torch.cat(grabbed).cpu().numpy()
