"""MoCo v2 (He et al. 2020; Chen et al. 2020), named as in the paper: q, k, K (queue), m, T.

Pieces are small and free-standing so that tests can check each against a direct formula:
``ProjectionHead``, ``update_momentum``, ``info_nce`` and the ``MoCo`` module that ties them together.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class ProjectionHead(nn.Sequential):
    """MoCo v2's 2-layer MLP: Linear -> ReLU -> Linear, (B, in_dim) -> (B, out_dim)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int = 128):
        super().__init__(nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim))


@torch.no_grad()
def update_momentum(model: nn.Module, ema: nn.Module, m: float) -> None:
    """ema <- m * ema + (1 - m) * model, parameter by parameter; buffers (BN statistics) are copied.

    Uses the multi-tensor ``_foreach`` kernels: a handful of launches instead of three per tensor.
    """
    params = [p.detach() for p in model.parameters()]
    ema_params = [p.detach() for p in ema.parameters()]
    torch._foreach_mul_(ema_params, m)
    torch._foreach_add_(ema_params, params, alpha=1.0 - m)
    for b, be in zip(model.buffers(), ema.buffers()):
        be.copy_(b)


def negative_similarities(q: torch.Tensor, queue: torch.Tensor, ids: torch.Tensor | None = None,
                          queue_ids: torch.Tensor | None = None) -> torch.Tensor:
    """q (B, D) · queue (K, D)ᵀ -> (B, K), with -inf where a queued key comes from the query's own pool row
    (when ``ids`` and ``queue_ids`` are given)."""
    sim = q @ queue.T
    if ids is None or queue_ids is None:
        return sim
    return sim.masked_fill(ids.to(sim.device)[:, None] == queue_ids.to(sim.device)[None, :], float("-inf"))


def info_nce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, T: float, *,
             ids: torch.Tensor | None = None, queue_ids: torch.Tensor | None = None,
             reduction: str = "mean") -> torch.Tensor:
    """InfoNCE of eq. 6: mean over the batch of -log( exp(q·k+/T) / (exp(q·k+/T) + Σ_j exp(q·n_j/T)) ).

    reduction: "mean" (a scalar) or "none" (B,): each query's own term, whose exp(-·) is the
    probability the model gives its positive (the per-image confidence of :class:`MoCo`).

    q, k:   (B, D) L2-normalised queries and their positive keys.
    queue:  (K, D) L2-normalised negatives.
    ids, queue_ids: (B,) and (K,) pool rows of the queries and of the queued keys; when given, a queued
            key of the query's own image is left out of its negatives (see :class:`MoCo`).
    """
    l_pos = (q * k).sum(dim=1, keepdim=True)          # (B, 1)
    l_neg = negative_similarities(q, queue, ids, queue_ids)   # (B, K)
    logits = torch.cat([l_pos, l_neg], dim=1) / T     # (B, 1 + K)
    labels = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
    return F.cross_entropy(logits.float(), labels, reduction=reduction)


def split_encode(encoder: nn.Module, x: torch.Tensor, splits: int) -> torch.Tensor:
    """Encode ``splits`` consecutive sub-batches of x (B, ...) separately, so that each has its own
    batch-norm statistics (falls back to one pass when the batch does not split into pieces of >= 2)."""
    if splits <= 1 or x.shape[0] % splits or x.shape[0] // splits < 2:
        return encoder(x)
    return torch.cat([encoder(c) for c in x.chunk(splits)])


#: where features are read: the pooled ResNet output ('backbone', the default), the projection head's
#: ('head'), or every ResNet stage's pooled output, each L2-normalised, side by side ('multiscale')
FEATURE_LAYERS = ("backbone", "head", "multiscale")


class MoCo(nn.Module):
    """Query encoder f_q = head ∘ backbone, momentum key encoder f_k, queue of K negatives.

    backbone: (B, 3, H, W) -> (B, C) module with an ``out_dim`` attribute.

    The queue also remembers which pool row each key came from (``queue_ids``, -1 when empty). On
    ImageNet a query's own image is almost never among K = 65536 queued keys; on a pool of a few
    hundred images it often is (K is capped at half the pool, and the previous epoch's keys are still
    queued), and then its own older view counts as a negative. Passing ``ids`` masks those entries, so
    small pools train as the method assumes; without ``ids`` nothing is masked.

    With ``pool_size`` = n the model also keeps, per pool row, the running sum and count of the
    probability each training query gave its positive key (``confidence_sum``/``confidence_count``,
    filled by the training loop). Their ratio, :meth:`confidence`, is the instance-discrimination
    confidence averaged over training, from which Chen et al. (2022, "Making your first choice")
    rank images as hard to contrast. Being buffers, they travel with the checkpoint.
    """

    def __init__(self, backbone: nn.Module, dim: int = 128, K: int = 4096, m: float = 0.99, T: float = 0.2,
                 *, bn_splits: int = 1, generator: torch.Generator | None = None, pool_size: int = 0):
        super().__init__()
        self.register_buffer("confidence_sum", torch.zeros(pool_size, dtype=torch.float64))   # (n,)
        self.register_buffer("confidence_count", torch.zeros(pool_size, dtype=torch.float64))  # (n,)
        self.K, self.m, self.T, self.bn_splits = K, m, T, bn_splits
        self.encoder_q = nn.Sequential(backbone, ProjectionHead(backbone.out_dim, backbone.out_dim, dim))
        self.encoder_k = copy.deepcopy(self.encoder_q)
        for p in self.encoder_k.parameters():
            p.requires_grad_(False)
        queue = F.normalize(torch.randn(K, dim, generator=generator), dim=1)
        self.register_buffer("queue", queue)                          # (K, dim)
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("queue_ids", torch.full((K,), -1, dtype=torch.long))   # (K,) pool rows

    @torch.no_grad()
    def _enqueue(self, k: torch.Tensor, ids: torch.Tensor | None = None) -> None:
        """Replace the oldest keys by ``k`` (B, dim) of pool rows ``ids`` (B,); wraps around, so K need
        not divide by B."""
        B = k.shape[0]
        pos = (self.queue_ptr + torch.arange(B, device=k.device)) % self.K
        self.queue[pos] = k.to(self.queue.dtype)
        self.queue_ids[pos] = -1 if ids is None else ids.to(self.queue_ids.device)
        self.queue_ptr.copy_((self.queue_ptr + B) % self.K)

    def _split_encode(self, encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return split_encode(encoder, x, self.bn_splits)

    def confidence(self) -> np.ndarray:
        """(n,) float32 mean positive probability per pool row over training; rows never trained on get the
        mean of the others (every row is seen in a normal run: each epoch visits n // batch · batch rows)."""
        s, c = self.confidence_sum.cpu().numpy(), self.confidence_count.cpu().numpy()
        out = np.divide(s, c, out=np.full_like(s, np.nan), where=c > 0)
        if np.isnan(out).any():
            out[np.isnan(out)] = np.nanmean(out) if (c > 0).any() else 0.0
        return out.astype(np.float32)

    def forward(self, im_q: torch.Tensor, im_k: torch.Tensor, *, shuffle: torch.Tensor | None = None,
                ids: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
        """Loss for one batch of view pairs (B, 3, H, W) each; updates f_k and the queue.
        reduction: "mean" (scalar) or "none" ((B,) per query, see :func:`info_nce`).

        ids: (B,) pool rows of the images, to keep a query's own queued keys out of its negatives.

        shuffle: (B,) permutation of the key batch before f_k, undone after. With ``bn_splits`` > 1 this
        is MoCo's shuffle-BN on one device: queries and keys are normalised over different sub-batches,
        so a query cannot find its key through shared batch statistics.
        """
        q = F.normalize(self._split_encode(self.encoder_q, im_q).float(), dim=1)   # (B, dim)
        with torch.no_grad():
            update_momentum(self.encoder_q, self.encoder_k, self.m)
            if shuffle is not None:
                k = self._split_encode(self.encoder_k, im_k[shuffle])
                k = k[torch.argsort(shuffle)]
            else:
                k = self._split_encode(self.encoder_k, im_k)
            k = F.normalize(k.float(), dim=1)                        # (B, dim)
        loss = info_nce(q, k, self.queue.clone().detach(), self.T, ids=ids, queue_ids=self.queue_ids.clone(),
                        reduction=reduction)
        self._enqueue(k, ids)
        return loss

    @torch.no_grad()
    def loss_without_update(self, im_q: torch.Tensor, im_k: torch.Tensor,
                            ids: torch.Tensor | None = None) -> torch.Tensor:
        """Per-sample InfoNCE (B,) against the current queue, changing nothing (for eq. 7)."""
        q = F.normalize(self.encoder_q(im_q).float(), dim=1)
        k = F.normalize(self.encoder_k(im_k).float(), dim=1)
        l_pos = (q * k).sum(1, keepdim=True)
        logits = torch.cat([l_pos, negative_similarities(q, self.queue, ids, self.queue_ids)], 1) / self.T
        return torch.logsumexp(logits, 1) - logits[:, 0]

    @torch.no_grad()
    def embed(self, x: torch.Tensor, layer: str = "backbone") -> torch.Tensor:
        """L2-normalised features of the query encoder: 'head' (dim), 'backbone' (out_dim) or
        'multiscale' (the sum of the stage widths: each stage's pooled output L2-normalised and divided
        by √stages, so that stages weigh alike in a distance and the row has norm 1)."""
        if layer not in FEATURE_LAYERS:
            raise ValueError(f"layer={layer!r}: choose {', '.join(FEATURE_LAYERS)}")
        backbone, head = self.encoder_q[0], self.encoder_q[1]
        if layer == "multiscale":
            parts = [F.normalize(s.float(), dim=1) for s in backbone.stage_features(x)]
            return torch.cat(parts, dim=1) / len(parts) ** 0.5
        h = backbone(x)
        z = head(h) if layer == "head" else h
        return F.normalize(z.float(), dim=1)
