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
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from coldseg.iterative import IterativeResult, get_iterative, round_seed, round_sizes
from coldseg.segment.workers import run_pool, serve, worker_device

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


def _worker(rank, jobs_q, results_q, device, images, masks, meta, pool_idx, cfg, rounds, threads):
    from coldseg.data.pairs import PairSet

    def setup():
        dev = worker_device(device, threads)
        pairs = PairSet(meta["root"], meta["ids"], images.numpy(), masks.numpy(), meta["groups"],
                        meta["n_classes"])
        return dev, pairs

    def handle(state, job):
        dev, pairs = state
        return _one(job, pairs, pool_idx, cfg, rounds, dev)

    serve(rank, jobs_q, results_q, setup, handle)


def _pool(jobs, pairs, pool_idx, cfg, rounds, dev, workers):
    images = torch.from_numpy(pairs.images).share_memory_()
    masks = torch.from_numpy(pairs.masks).share_memory_()
    meta = {"root": pairs.root, "ids": pairs.ids, "groups": pairs.groups, "n_classes": pairs.n_classes}
    threads = 2 if dev.type == "cuda" else max(1, (os.cpu_count() or 1) // workers)
    for jno, res in run_pool(_worker, (str(dev), images, masks, meta, pool_idx, cfg, rounds, threads),
                             list(jobs), workers, label="iterative-selection", where=str(dev),
                             describe=lambda j: repr(jobs[j].key)):
        yield jobs[jno], res


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
