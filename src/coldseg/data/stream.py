"""Batches of pool pixels by index, on a device: the whole pool there when it fits, else streamed.

:class:`PixelSource` is what training and embedding read from. On a GPU a pool under
``LoaderConfig.device_pool_gb`` (default a quarter of the device's memory) is copied there once and
indexed (the fast path: 10^4 images at 128 px are 0.5 GB). Otherwise, and on CPU for a file-backed
memmap (coldseg.data.decoded), batches come through a ``torch.utils.data.DataLoader`` over
:class:`PoolRows`, with worker processes and pinned memory on CUDA. Both paths give the same rows in
the same order, so results do not depend on the path (bit-identical on CPU).
"""
from __future__ import annotations

import mmap
import os
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch


def _file_backed(images) -> tuple[str, int] | None:
    """(path, data offset) when ``images`` is a whole-file memmap (np.load(mmap_mode='r')), else None."""
    if isinstance(images, np.memmap) and isinstance(images.base, mmap.mmap) and images.filename \
            and images.flags.c_contiguous:
        return str(images.filename), int(images.offset)
    return None


class PoolRows(torch.utils.data.Dataset):
    """Rows of an (n, 3, S, S) uint8 pool by index batch: ``rows[idx]`` -> (len(idx), 3, S, S) tensor.

    A whole-file memmap is read with positioned reads (one per run of consecutive rows), which keeps
    the pages out of this process's resident memory and pickles as a path for DataLoader workers;
    any other array is indexed.
    """

    def __init__(self, images: np.ndarray):
        self.shape = tuple(images.shape)
        self.file = _file_backed(images)
        self.array = None if self.file else images
        self._fd: int | None = None

    def __len__(self) -> int:
        return self.shape[0]

    def __getstate__(self):
        return {**self.__dict__, "_fd": None}

    def __del__(self):
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)

    def __getitem__(self, idx) -> torch.Tensor:
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)            # (b,)
        if self.array is not None:
            return torch.from_numpy(np.ascontiguousarray(self.array[idx]))
        if self._fd is None:
            self._fd = os.open(self.file[0], os.O_RDONLY)
        row = int(np.prod(self.shape[1:]))
        order = np.argsort(idx, kind="stable")
        srt = idx[order]
        out = np.empty((len(idx), *self.shape[1:]), np.uint8)        # rows in sorted order
        flat = out.reshape(len(idx), row)
        breaks = np.flatnonzero(np.diff(srt) != 1) + 1               # runs of consecutive rows
        for a, b in zip(np.r_[0, breaks], np.r_[breaks, len(srt)]):
            if b <= a:
                continue
            buf, off = memoryview(flat[a:b]).cast("B"), self.file[1] + int(srt[a]) * row
            while len(buf):
                got = os.preadv(self._fd, [buf], off)
                if got <= 0:
                    raise OSError(f"{self.file[0]} ended early; delete its cache folder and rerun")
                buf, off = buf[got:], off + got
        if np.any(order != np.arange(len(idx))):
            res = np.empty_like(out)
            res[order] = out
            out = res
        return torch.from_numpy(out)


@dataclass
class LoaderConfig:
    """How pixels reach the model. Changes speed and memory only, never the result."""

    stream: bool | None = None           # None: stream file-backed pools on CPU, and on CUDA pools over
                                         # device_pool_gb; False: whole pool in memory / on the device
    workers: int | None = None           # DataLoader worker processes; None: 0 on CPU, up to 4 on CUDA
    device_pool_gb: float | None = None  # CUDA: largest pool kept whole on the device (None: 1/4 of it)


class PixelSource:
    """Batches of pool pixels (uint8) on ``device``, by index: the whole pool on the device (fast path)
    or streamed from a memmap through a ``DataLoader``. Both give the same values in the same order."""

    def __init__(self, images, device: torch.device, cfg: LoaderConfig | None = None, *, local_world: int = 1):
        cfg = cfg or LoaderConfig()
        self.device = torch.device(device)
        self.shape = tuple(images.shape)                              # (n, 3, S, S)
        nbytes = int(np.prod(self.shape))
        stream = cfg.stream
        if stream is None:
            if self.device.type == "cuda":
                limit = cfg.device_pool_gb
                if limit is None:
                    limit = torch.cuda.get_device_properties(self.device).total_memory / 4 / 2**30
                stream = nbytes > limit * 2**30
            else:
                stream = isinstance(images, np.memmap)
        self.streamed = bool(stream)
        self.workers = cfg.workers if cfg.workers is not None else (
            min(4, max(1, (os.cpu_count() or 1) // local_world)) if self.device.type == "cuda" else 0)
        if self.streamed:
            self.rows = PoolRows(images if not isinstance(images, torch.Tensor) else images.cpu().numpy())
            self.images = None
        elif isinstance(images, torch.Tensor):
            self.images = images.to(self.device)
        elif isinstance(images, np.memmap):  # read once, in slices, straight to the device
            self.images = torch.empty(self.shape, dtype=torch.uint8, device=self.device)
            rows = PoolRows(images)
            for s in range(0, self.shape[0], 1024):
                self.images[s : s + 1024] = rows[np.arange(s, min(s + 1024, self.shape[0]))].to(self.device)
        else:
            self.images = torch.as_tensor(images).to(self.device)

    def __len__(self) -> int:
        return self.shape[0]

    def batches(self, index_batches: list[torch.Tensor]) -> Iterator[torch.Tensor]:
        """Yield ``pool[idx]`` (b, 3, S, S) uint8 on the device for each index tensor, in order."""
        if not self.streamed:
            for idx in index_batches:
                yield self.images[idx.to(self.images.device)]
            return
        if not index_batches:
            return
        flat = torch.cat([i.reshape(-1) for i in index_batches]).cpu().numpy()   # one host sync
        sizes = np.cumsum([i.numel() for i in index_batches])[:-1]
        loader = torch.utils.data.DataLoader(
            self.rows, batch_size=None, sampler=np.split(flat, sizes), num_workers=self.workers,
            pin_memory=self.device.type == "cuda", prefetch_factor=4 if self.workers else None)
        for x in loader:
            yield x.to(self.device, non_blocking=True)
