"""MoCo across processes with ``torch.distributed``, started by ``torchrun`` (gloo on CPU, NCCL on CUDA).

What each rank r of W does in one step, for a global batch of B = W·b pool rows drawn from the same
seeded permutation on every rank (the epoch order and ``perm`` come from a generator that all ranks
seed alike, so no indices are communicated):

- queries: the b rows at global positions r·b … (r+1)·b − 1, through the DDP-wrapped query encoder
  (``DistributedDataParallel`` averages the gradients);
- keys, with **shuffle-BN by index**: the b rows at global positions ``perm[r·b:(r+1)·b]``, where
  ``perm`` is a random permutation of the B positions. MoCo's batch shuffle all-gathers the key
  *images* and scatters a permuted slice to each rank; here every rank can read every pool row (the
  pool is shared: on the device or in a memmap), so each rank reads its permuted rows directly and
  only the B × dim keys are exchanged. As in MoCo, the keys a rank normalises with its batch-norm
  statistics belong to other images than its queries, so batch statistics cannot leak the positive.
  (SyncBatchNorm was not chosen: one batch statistic shared by queries and keys is what shuffle-BN
  exists to avoid.)
- the keys are all-gathered and un-shuffled into global order, each rank takes its queries' positives
  from them, and every rank enqueues all B keys: the queues stay identical on all ranks.
- the momentum update runs on every rank on identical parameters, so the key encoders stay identical.

Batch-norm running statistics (used only in eval mode: eq. 7 scoring and embedding) are averaged over
ranks at the end of every epoch, so every rank then holds the same model and a checkpoint written by
rank 0 is the state of all ranks. Embedding is sharded: rank r embeds one contiguous slice of the pool
and the slices are gathered.
"""
from __future__ import annotations

import contextlib
import inspect
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from coldseg.features.moco import MoCo, info_nce, split_encode, update_momentum


WAIT_TIMEOUT = timedelta(hours=24)  # how long ranks wait for rank 0's single-process work (on_main)
_WAIT_GROUP = None


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def manifest(self) -> dict[str, Any]:
        return {"world_size": self.world_size, "backend": self.backend}


SINGLE = DistInfo()


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value else default
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer; torchrun sets it") from None


def check_device(device: str | torch.device | None, option: str = "device") -> None:
    """Refuse a device coldseg cannot run on, with a one-line reason naming ``option`` (``--device`` on the
    command line): an unknown string, a device type other than cpu and cuda (mps, xpu, ...: coldseg's
    training and its manifest know CPU and CUDA only), CUDA on a machine without it, a missing GPU index."""
    if device is None or (isinstance(device, str) and device.strip() == "auto"):
        return
    try:
        dev = torch.device(device.strip() if isinstance(device, str) else device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"{option} {device}: use auto, cpu or cuda[:i]") from None
    if dev.type == "cpu":
        return
    if dev.type != "cuda":
        raise ValueError(f"{option} {device}: coldseg runs on the CPU or on CUDA only; use auto, cpu or cuda[:i]")
    if not torch.cuda.is_available():
        raise ValueError(f"{option} {device}: CUDA is not available on this machine; use {option} cpu or auto")
    n = torch.cuda.device_count()
    if dev.index is not None and dev.index >= n:
        raise ValueError(f"{option} {device}: this machine has {n} CUDA device(s), cuda:0 to cuda:{n - 1}")


@contextlib.contextmanager
def session(device: str | torch.device | None = None) -> Iterator[tuple[DistInfo, torch.device]]:
    """(DistInfo, device) for this process. Under torchrun (WORLD_SIZE > 1) joins the process group
    (NCCL with one GPU per local rank when CUDA is used, gloo otherwise) and leaves it on exit;
    otherwise, or when the caller already initialised the group, changes nothing. A device coldseg cannot
    run on fails first (:func:`check_device`), before anything is read."""
    check_device(device)
    world = _env_int("WORLD_SIZE", 1)
    want_cuda = torch.cuda.is_available() if device in (None, "auto") else torch.device(device).type == "cuda"
    if world <= 1:
        dev = torch.device("cuda" if want_cuda else "cpu") if device in (None, "auto") else torch.device(device)
        yield SINGLE, dev
        return
    rank, local = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if want_cuda:
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group("nccl" if want_cuda else "gloo", rank=rank, world_size=world,
                                **({"device_id": dev} if want_cuda else {}))
    info = DistInfo(rank, world, local, _env_int("LOCAL_WORLD_SIZE", 1), dist.get_backend())
    global _WAIT_GROUP
    # rank 0 alone decodes the pool (hours for 10^6 files): the others wait in a gloo group of their own
    # whose timeout is long, so the default group keeps its short one for the training collectives
    _WAIT_GROUP = dist.new_group(backend="gloo", timeout=WAIT_TIMEOUT)
    try:
        yield info, dev
    finally:
        _WAIT_GROUP = None
        if owned and dist.is_initialized():
            dist.destroy_process_group()


# --- collectives -------------------------------------------------------------------------------------
@torch.no_grad()
def all_gather_cat(x: torch.Tensor) -> torch.Tensor:
    """(b, ...) on every rank -> (W·b, ...) on every rank, rank 0's rows first. No gradient."""
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


@torch.no_grad()
def gather_rows(x: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """Rank r's (counts[r], d) -> (sum(counts), d) on every rank, in rank order (pads to the largest)."""
    m = max(counts)
    pad = torch.zeros((m, *x.shape[1:]), dtype=x.dtype, device=x.device)
    pad[: x.shape[0]] = x
    full = all_gather_cat(pad)                                   # (W·m, d)
    return torch.cat([full[r * m : r * m + c] for r, c in enumerate(counts)])


def broadcast_object(obj: Any, info: DistInfo, group=None) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not info.active:
        return obj
    box = [obj if info.is_main else None]
    dist.broadcast_object_list(box, src=0, group=group)
    return box[0]


def on_main(fn, info: DistInfo):
    """``fn()`` run on rank 0 only; its result, or the exception it raised, on every rank (so that a
    bad input fails every rank with the same message instead of leaving the others waiting)."""
    if not info.active:
        return fn()
    result = error = None
    if info.is_main:
        try:
            result = fn()
        except Exception as e:  # noqa: BLE001 - re-raised on every rank below
            error = e
    result, error = broadcast_object((result, error), info, group=_WAIT_GROUP)
    if error is not None:
        raise error
    return result


def all_gather_object(obj: Any, info: DistInfo) -> list[Any]:
    if not info.active:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(info: DistInfo) -> None:
    if info.active:
        dist.barrier()


@torch.no_grad()
def average_bn_statistics(model: nn.Module, info: DistInfo) -> None:
    """Average every batch-norm layer's running mean and variance over the ranks (in place)."""
    if not info.active:
        return
    stats = [t for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
             for t in (m.running_mean, m.running_var) if t is not None]
    if not stats:
        return
    flat = torch.cat([t.reshape(-1).double() for t in stats])
    dist.all_reduce(flat)
    flat /= info.world_size
    for t, v in zip(stats, flat.split([t.numel() for t in stats])):
        t.copy_(v.view_as(t).to(t.dtype))


def mean_over_ranks(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if not info.active:
        return x
    x = x.detach().clone()
    dist.all_reduce(x)
    return x / info.world_size


def sum_over_ranks(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """The element-wise sum of ``x`` over the ranks (``x`` itself in one process)."""
    if not info.active:
        return x
    x = x.detach().clone()
    dist.all_reduce(x)
    return x


def shard(n: int, info: DistInfo) -> tuple[int, int, list[int]]:
    """This rank's contiguous slice [start, stop) of n rows, and every rank's row count."""
    counts = [len(c) for c in np.array_split(np.arange(n), info.world_size)]
    start = sum(counts[: info.rank])
    return start, start + counts[info.rank], counts


# --- the distributed MoCo step -----------------------------------------------------------------------
class _SplitQuery(nn.Module):
    """The query encoder as one module call (DDP needs one forward per backward): shuffle-BN's
    sub-batches are encoded inside."""

    def __init__(self, encoder: nn.Module, splits: int):
        super().__init__()
        self.encoder, self.splits = encoder, splits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return split_encode(self.encoder, x, self.splits)


def wrap_query_encoder(model: MoCo, device: torch.device) -> nn.Module:
    """DistributedDataParallel over the query encoder's parameters (shared with ``model``, not copied).
    Buffers are not broadcast each step: :func:`average_bn_statistics` syncs them per epoch."""
    ids = [device.index] if device.type == "cuda" else None
    ddp = nn.parallel.DistributedDataParallel
    no_sync = {"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(ddp).parameters \
        else {"broadcast_buffers": False}  # the name before torch 2.13
    return ddp(_SplitQuery(model.encoder_q, model.bn_splits), device_ids=ids, **no_sync)


def key_positions(perm: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Global batch positions whose keys rank r encodes: perm[r·b:(r+1)·b]."""
    b = perm.shape[0] // info.world_size
    return perm[info.rank * b : (info.rank + 1) * b]


def moco_step(model: MoCo, ddp_q: nn.Module, im_q: torch.Tensor, im_k: torch.Tensor, perm: torch.Tensor,
              info: DistInfo, ids: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """MoCo loss of rank r's queries; updates f_k and the (identical) queue on every rank.

    im_q: (b, 3, H, W) views of global positions r·b … (r+1)·b − 1.
    im_k: (b, 3, H, W) views of global positions ``key_positions(perm)``.
    perm: (B,) the shared key permutation, B = W·b.
    ids:  (B,) pool rows of global positions 0 … B − 1 (the same on every rank), for the queue's own-image
          mask (see :class:`MoCo`).
    reduction: "mean" (scalar) or "none" ((b,), one term per query of this rank).
    """
    b = im_q.shape[0]
    q = F.normalize(ddp_q(im_q).float(), dim=1)                              # (b, dim)
    with torch.no_grad():
        update_momentum(model.encoder_q, model.encoder_k, model.m)
        k = F.normalize(split_encode(model.encoder_k, im_k, model.bn_splits).float(), dim=1)  # (b, dim)
        k_perm = all_gather_cat(k)                                           # (B, dim): row j = position perm[j]
        k_all = torch.empty_like(k_perm)
        k_all[perm] = k_perm                                                 # (B, dim): row i = position i
    mine = slice(info.rank * b, (info.rank + 1) * b)
    loss = info_nce(q, k_all[mine], model.queue.clone().detach(), model.T,
                    ids=None if ids is None else ids[mine], queue_ids=model.queue_ids.clone(), reduction=reduction)
    model._enqueue(k_all, ids)
    return loss
