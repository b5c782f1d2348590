"""Worker processes that share one device: the queue protocol both trainers and iterative rounds use.

Parent: :func:`run_pool` puts ``(job number, payload)`` items on a jobs queue (one ``None`` sentinel per
worker), starts ``workers`` spawned processes running ``target(rank, jobs_q, results_q, *args)``, and
yields ``(job number, result)`` as results arrive. A worker that dies (killed for memory, a crash in
C code) is noticed within 2 s and named, with the job it held; an exception inside a worker comes
back as its traceback. Every exit path, Ctrl-C included, stops the workers (:func:`stop_processes`).

Worker: ``target`` calls :func:`serve` with a ``setup`` (run once: e.g. copy the data to the device)
and a ``handle(state, payload)`` (one job), which keeps the message protocol in one place:
``("start", rank, jno, None)``, ``("done", rank, jno, result)``, ``("error", rank, jno, traceback)``.
"""
from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch


def worker_device(device: str, threads: int) -> torch.device:
    """Per-worker setup: ignore Ctrl-C (the parent handles it), set threads, select the CUDA device."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", 0)  # set_device needs an index
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
        torch.backends.cudnn.benchmark = True
    return dev


def serve(rank: int, jobs_q, results_q, setup: Callable[[], Any], handle: Callable[[Any, Any], Any]) -> None:
    """Worker loop: ``state = setup()``, then ``handle(state, payload)`` for every job until ``None``."""
    jno = None
    _exit_with_parent()
    try:
        state = setup()
        while (item := jobs_q.get()) is not None:
            jno, payload = item
            results_q.put(("start", rank, jno, None))
            results_q.put(("done", rank, jno, handle(state, payload)))
            jno = None
    except BaseException:  # noqa: BLE001 - everything must reach the parent
        results_q.put(("error", rank, jno, traceback.format_exc()))


def _exit_with_parent() -> None:
    """Exit this worker the moment its parent dies. A parent killed outright (SIGKILL, the OOM killer)
    cannot stop its workers, and the queue still holds its jobs: they would train them all for nobody,
    holding the device against the rerun."""
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=lambda: (parent.join(), os._exit(1)), daemon=True,
                         name="coldseg-parent-watch").start()


def run_pool(target: Callable[..., None], args: tuple, payloads: Sequence[Any], workers: int, *,
             label: str, where: str, describe: Callable[[int], str],
             error: type[Exception] = RuntimeError) -> Iterator[tuple[int, Any]]:
    """Run ``payloads`` on ``workers`` spawned processes; yield (job number, result) as they finish.

    label: what the workers are, for messages and process names ("segmentation", "iterative-selection");
    where: the device they share, for messages.
    describe(jno): how a message names job ``jno`` (e.g. its run key).
    """
    ctx = torch.multiprocessing.get_context("spawn")
    jobs_q, results_q = ctx.Queue(), ctx.Queue()
    # Jobs not yet taken sit in jobs_q's feeder thread; joining it at exit after the workers are gone
    # hangs the interpreter (seen on the H100 after Ctrl-C). Nothing in these queues must outlive us.
    jobs_q.cancel_join_thread()
    results_q.cancel_join_thread()
    for jno, payload in enumerate(payloads):
        jobs_q.put((jno, payload))
    for _ in range(workers):
        jobs_q.put(None)
    procs = [ctx.Process(target=target, args=(r, jobs_q, results_q, *args), daemon=True,
                         name=f"coldseg-{label}-{r}") for r in range(workers)]
    holding: dict[int, int] = {}                     # worker rank -> job number it is running
    left = len(payloads)
    try:
        for p in procs:
            p.start()
        while left:
            try:
                kind, rank, jno, result = results_q.get(timeout=2.0)
            except queue.Empty:
                _check_alive(procs, holding, left, label, where, describe, error, results_q)
                continue
            if kind == "start":
                holding[rank] = jno
            elif kind == "done":
                holding.pop(rank, None)
                left -= 1
                yield jno, result
            else:
                what = f"running job {describe(jno)}" if jno is not None else "setting up"
                raise error(f"{label} worker {rank} on {where} failed while {what}:\n{result}")
    finally:
        stop_processes(procs, wait=0 if left else 10)
        jobs_q.close()


def _check_alive(procs, holding, left, label, where, describe, error, results_q) -> None:
    for r, p in enumerate(procs):
        if not p.is_alive() and (r in holding or p.exitcode != 0):
            what = (f"while running job {describe(holding[r])}" if r in holding
                    else "before taking a job (a script that starts workers must guard its code with "
                         "`if __name__ == '__main__':`)")
            raise error(f"{label} worker {r} on {where} died (exit code {p.exitcode}) {what}; if it was "
                        "killed for memory, pass fewer workers") from None
    if not any(p.is_alive() for p in procs) and results_q.empty():
        raise error(f"all {label} workers on {where} exited with {left} job(s) unfinished") from None


def stop_processes(procs, wait: float = 0) -> None:
    """Join ``procs`` (started or not) for up to ``wait`` s, then terminate, then kill what is left.

    Used on every exit path (done, error, KeyboardInterrupt), so no worker outlives its run.
    """
    started = [p for p in procs if p.pid is not None]
    deadline = time.monotonic() + wait
    for p in started:
        p.join(timeout=max(0.0, deadline - time.monotonic()))
    for p in started:
        if p.is_alive():
            p.terminate()
    for p in started:
        p.join(timeout=5)
        if p.is_alive():
            p.kill()
            p.join(timeout=5)
