"""Run many iterative selections (strategy × budget × seed) at once.

Each selection is a chain of U-Net trainings that must run in order, but different selections are
independent. On CUDA, ``workers`` spawned processes share the GPU (as
:func:`coldseg.segment.runner.run_jobs` does for final trainings), each holding the pair set; on the
CPU, or with one worker, they run here one after another. Results come back as each finishes.
"""
from __future__ import annotations

import os
import queue
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from coldseg.iterative import IterativeResult, get_iterative


@dataclass
class IterativeJob:
    key: str
    strategy: str
    budget: int
    seed: int
    params: dict[str, Any] = field(default_factory=dict)


def _one(job: IterativeJob, pairs, pool_idx, cfg, rounds, device) -> IterativeResult:
    strat = get_iterative(job.strategy, **job.params)
    return strat.run(pairs, pool_idx, job.budget, seed=job.seed, rounds=rounds, cfg=cfg, device=device)


def run_iterative(jobs: Sequence[IterativeJob], pairs, pool_idx: np.ndarray, cfg, *, rounds: int = 3,
                  device: str | torch.device | None = None, workers: int | None = None
                  ) -> Iterator[tuple[IterativeJob, IterativeResult]]:
    """Yield ``(job, result)`` for every job, in completion order."""
    from coldseg.segment.train import resolve_device

    jobs = list(jobs)
    if not jobs:
        return
    dev = resolve_device(device)
    if workers is None:
        workers = 1 if dev.type == "cpu" else min(8, max(1, (os.cpu_count() or 2) // 2))
    workers = max(1, min(int(workers), len(jobs)))
    if workers == 1:
        for job in jobs:
            yield job, _one(job, pairs, pool_idx, cfg, rounds, dev)
        return
    yield from _pool(jobs, pairs, pool_idx, cfg, rounds, dev, workers)


def _worker(rank, device, images, masks, meta, pool_idx, cfg, rounds, threads, jobs_q, results_q):
    from coldseg.data.pairs import PairSet

    jno = None
    try:
        torch.set_num_threads(threads)
        dev = torch.device(device)
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", 0)  # set_device needs an index
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
            torch.backends.cudnn.benchmark = True
        pairs = PairSet(meta["root"], meta["ids"], images.numpy(), masks.numpy(), meta["groups"],
                        meta["n_classes"])
        while (item := jobs_q.get()) is not None:
            jno, job = item
            results_q.put(("done", rank, jno, _one(job, pairs, pool_idx, cfg, rounds, dev)))
            jno = None
    except BaseException:  # noqa: BLE001 - everything must reach the parent
        results_q.put(("error", rank, jno, traceback.format_exc()))


def _pool(jobs, pairs, pool_idx, cfg, rounds, dev, workers):
    ctx = torch.multiprocessing.get_context("spawn")
    jobs_q, results_q = ctx.Queue(), ctx.Queue()
    for jno, job in enumerate(jobs):
        jobs_q.put((jno, job))
    for _ in range(workers):
        jobs_q.put(None)
    images = torch.from_numpy(pairs.images).share_memory_()
    masks = torch.from_numpy(pairs.masks).share_memory_()
    meta = {"root": pairs.root, "ids": pairs.ids, "groups": pairs.groups, "n_classes": pairs.n_classes}
    threads = 2 if dev.type == "cuda" else max(1, (os.cpu_count() or 1) // workers)
    procs = [ctx.Process(target=_worker, args=(r, str(dev), images, masks, meta, pool_idx, cfg, rounds,
                                               threads, jobs_q, results_q),
                         daemon=True, name=f"coldseg-iter-{r}") for r in range(workers)]
    for p in procs:
        p.start()
    left = len(jobs)
    try:
        while left:
            try:
                kind, rank, jno, payload = results_q.get(timeout=2.0)
            except queue.Empty:
                dead = [r for r, p in enumerate(procs) if not p.is_alive() and p.exitcode != 0]
                if dead:
                    raise RuntimeError(f"iterative-selection worker {dead[0]} on {dev} died (exit code "
                                       f"{procs[dead[0]].exitcode}); if it was killed for memory, pass "
                                       "fewer workers") from None
                if not any(p.is_alive() for p in procs) and results_q.empty():
                    raise RuntimeError(f"all iterative-selection workers exited with {left} job(s) "
                                       "unfinished") from None
                continue
            if kind == "error":
                what = f"job {jobs[jno].key!r}" if jno is not None else "setup"
                raise RuntimeError(f"iterative-selection worker {rank} on {dev} failed in {what}:\n{payload}")
            left -= 1
            yield jobs[jno], payload
    finally:
        for p in procs:
            if p.is_alive() and left:
                p.terminate()
        for p in procs:
            p.join(timeout=10)
