"""Run many iterative selections (strategy × budget × seed) at once.

Each selection is a chain of U-Net trainings that must run in order, but different selections are
independent. Three ways, chosen as :func:`coldseg.segment.runner.run_jobs` chooses
(:func:`~coldseg.segment.runner.resolve_parallelism`):

* ``stack`` > 1 (the CUDA default): all selections advance round by round in this process
  (:func:`_lockstep`); the round models of selections at the same round (and with the same round
  config) are trained together, ``stack`` at a time, with
  :func:`coldseg.segment.stacked.train_stacked`, then each selection queries with its own model.
* ``workers`` > 1: spawned processes share the GPU, each holding the pair set and running whole
  selections (``IterativeStrategy.run``).
* otherwise (the CPU default): one selection after another here.

Results come back as each selection finishes.
"""
from __future__ import annotations

import os
import queue
import signal
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from coldseg.iterative import IterativeResult, get_iterative, round_seed, round_sizes

#: (pool positions per model, seeds, round SegConfig) -> trained models in eval mode, one per entry
TrainMany = Callable[[list[np.ndarray], list[int], Any], list[Any]]


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
                  device: str | torch.device | None = None, workers: int | None = None,
                  stack: int | None = None) -> Iterator[tuple[IterativeJob, IterativeResult]]:
    """Yield ``(job, result)`` for every job, in completion order."""
    from coldseg.segment.runner import resolve_parallelism
    from coldseg.segment.train import resolve_device

    jobs = list(jobs)
    dev = resolve_device(device)
    workers, stack = resolve_parallelism(dev, workers, stack)
    if not jobs:
        return
    workers = min(workers, len(jobs))
    if stack > 1:
        yield from _lockstep(jobs, pairs, pool_idx, cfg, rounds, dev, stack)
        return
    if workers == 1:
        for job in jobs:
            yield job, _one(job, pairs, pool_idx, cfg, rounds, dev)
        return
    yield from _pool(jobs, pairs, pool_idx, cfg, rounds, dev, workers)


def _worker(rank, device, images, masks, meta, pool_idx, cfg, rounds, threads, jobs_q, results_q):
    from coldseg.data.pairs import PairSet

    jno = None
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C is the parent's to handle
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
    from coldseg.segment.runner import stop_processes

    ctx = torch.multiprocessing.get_context("spawn")
    jobs_q, results_q = ctx.Queue(), ctx.Queue()
    jobs_q.cancel_join_thread()      # see runner._run_pool: never join a feeder at exit
    results_q.cancel_join_thread()
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
    left = len(jobs)
    try:
        for p in procs:
            p.start()
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
        stop_processes(procs, wait=0 if left else 10)
        jobs_q.close()


@dataclass
class _State:
    """One selection in :func:`_lockstep`: what ``IterativeStrategy.run`` keeps in its locals."""
    job: IterativeJob
    strat: Any
    sizes: list[int]
    picked: np.ndarray
    log: list[dict[str, Any]]
    rcfg: Any


def _lockstep(jobs: list[IterativeJob], pairs, pool_idx: np.ndarray, cfg, rounds: int, dev,
              stack: int, train_many: TrainMany | None = None
              ) -> Iterator[tuple[IterativeJob, IterativeResult]]:
    """All selections round by round; round models trained ``stack`` at a time (module docstring).

    Every step is ``IterativeStrategy.run``'s, in its order and with its seeds (random first round from
    ``default_rng(seed)``, round model seeded ``round_seed(seed, r)``, ``query``, the same checks and
    round log), so a selection equals its ``run`` up to the training's float rounding;
    ``tests/test_stacked.py`` holds the two side by side. Keep them in step when ``run`` changes.
    ``train_seconds`` in the log is the chunk's training time divided by its size.
    """
    from coldseg.segment.stacked import train_stacked
    from coldseg.segment.train import SegConfig, as_tensor

    pool_idx = np.asarray(pool_idx, dtype=np.int64)
    n = len(pool_idx)
    cfg = cfg if cfg is not None else SegConfig()
    if train_many is None:
        x_all, y_all = as_tensor(pairs.images, dev), as_tensor(pairs.masks, dev)   # once, on the device

        def train_many(pos_list, seeds, rcfg):
            return train_stacked(x_all, y_all, [pool_idx[p] for p in pos_list], seeds, rcfg, device=dev,
                                 n_classes=pairs.n_classes)
    images = pairs.images[pool_idx]                                    # (n, 3, S, S) uint8
    states = []
    for job in jobs:
        if not 1 <= job.budget <= n:
            raise ValueError(f"job {job.key!r}: budget={job.budget} must lie in [1, {n}] (the pool holds "
                             f"{n} images)")
        strat = get_iterative(job.strategy, **job.params)
        sizes = round_sizes(job.budget, rounds)
        rng = np.random.default_rng(job.seed)
        picked = rng.choice(n, size=sizes[0], replace=False).astype(np.int64)
        states.append(_State(job, strat, sizes, picked, [{"round": 0, "picked": sizes[0], "how": "random"}],
                             strat.round_config(cfg)))

    def finished(r: int):
        for st in states:
            if len(st.sizes) == r + 1:
                yield st.job, IterativeResult(st.picked, st.sizes, {"rounds": st.log})

    yield from finished(0)
    for r in range(1, max(len(st.sizes) for st in states)):
        groups: dict[str, list[_State]] = {}
        for st in states:
            if r < len(st.sizes):
                groups.setdefault(repr(st.rcfg), []).append(st)           # stack only equal configs
        for group in groups.values():
            for a in range(0, len(group), stack):
                chunk = group[a:a + stack]
                t0 = time.perf_counter()
                models = train_many([st.picked for st in chunk], [round_seed(st.job.seed, r) for st in chunk],
                                    chunk[0].rcfg)
                per_model = (time.perf_counter() - t0) / len(chunk)
                for st, model in zip(chunk, models):
                    k = st.sizes[r]
                    t1 = time.perf_counter()
                    new, facts = st.strat.query(model, images, st.picked, k, seed=round_seed(st.job.seed, r),
                                                device=dev)
                    new = np.asarray(new, dtype=np.int64)
                    if len(new) != k or len(np.unique(new)) != k or np.isin(new, st.picked).any():
                        raise RuntimeError(f"{st.strat.name}: round {r} returned {len(new)} picks "
                                           f"(wanted {k} new, unique, unlabelled positions)")
                    st.picked = np.concatenate([st.picked, new])
                    st.log.append({"round": r, "picked": k, "train_seconds": round(per_model, 3),
                                   "query_seconds": round(time.perf_counter() - t1, 3), **facts})
                del models
        yield from finished(r)
