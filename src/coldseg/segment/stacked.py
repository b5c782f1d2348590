"""Several U-Nets stepped together in one process: G copies of the MONAI U-Net as one grouped network.

Why: one 128-px U-Net leaves an H100 mostly idle (each step is a few hundred small kernel launches,
Python-bound), and worker processes sharing the card only time-slice it (no MPS), so their kernels
never overlap. Here G models become one network whose every convolution is a grouped convolution
(``groups=G``): one kernel launch does the work of G models, so the launch count per step is that of
one model.

Layout: every activation holds the G models' channels as G contiguous blocks: input
(B, G*in, H, W) with block g = model g's batch, output (B, G*out, H, W). Per layer, exactly what
:func:`coldseg.segment.unet.build_unet` builds (MONAI ``UNet``, ``num_res_units=0``): 3×3
convolutions with padding 1, stride 2 down and a stride-1 bottom, 3×3 transposed convolutions with
stride 2, padding 1, output_padding 1 up, each followed by BatchNorm -> Dropout -> PReLU (MONAI's
"NDA" order) except the top transposed convolution (conv only), skip connections concatenating
[encoder output, deeper output] per model. BatchNorm over G*C channels keeps per-model statistics;
PReLU has one weight per model per layer. The models share nothing, so the gradient of a sum of
per-model losses is each model's own gradient.

Equivalence with G separate MONAI U-Nets (outputs, gradients, weights after training) is tested in
``tests/test_stacked.py``; grouped and dense convolutions round differently, so agreement is to
float32 rounding, not bitwise. One consequence of the training recipe, not of stacking: a conv bias
feeding a BatchNorm has an exactly zero gradient in theory, so AdamW turns its rounding noise into
steps of up to ``lr``; those biases (and the running means that track them) differ by O(lr) between
any two float-different runs, ``train_segmenter`` with another thread count included.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.layers.simplelayers import SkipConnection
from torch import nn
from tqdm.auto import tqdm

from coldseg.segment.train import SegConfig, _lr_factor, as_tensor, normalise, resolve_device
from coldseg.segment.unet import build_unet, min_side, n_outputs


class GroupPReLU(nn.Module):
    """PReLU with one weight per model: weight (G,) broadcast over each model's C channels."""

    def __init__(self, groups: int, channels: int, init: float = 0.25):
        super().__init__()
        self.groups, self.channels = groups, channels
        self.weight = nn.Parameter(torch.full((groups,), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:                  # (B, G*C, H, W)
        return F.prelu(x, self.weight.repeat_interleave(self.channels))


class GroupDropout(nn.Module):
    """Element-wise dropout; with ``generators`` set (one per model), model g's mask comes from
    generator g, so a model's masks do not depend on which models it is stacked with.

    The mask is drawn exactly as ``F.dropout`` draws it on the CPU (bernoulli(1 - p) on a
    (B, C, H, W) tensor, divided by 1 - p), so on the CPU a model whose generator has the global
    generator's state gets the masks a lone MONAI U-Net would get. On CUDA ``F.dropout`` uses a fused
    kernel with another random layout: same distribution, other masks.
    """

    def __init__(self, groups: int, channels: int, p: float):
        super().__init__()
        self.groups, self.channels, self.p = groups, channels, float(p)
        self.generators: list[torch.Generator] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self.generators is None:
            return F.dropout(x, self.p, training=True)
        b, _, h, w = x.shape
        masks = [torch.empty((b, self.channels, h, w), dtype=x.dtype, device=x.device)
                 .bernoulli_(1.0 - self.p, generator=gen) for gen in self.generators]
        noise = stack_models(masks, channels_last=_is_channels_last(x))     # (B, G*C, H, W)
        return x * noise.div_(1.0 - self.p)


def _is_channels_last(x: torch.Tensor) -> bool:
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def stack_models(parts: Sequence[torch.Tensor], *, channels_last: bool = False) -> torch.Tensor:
    """G per-model tensors (B, C, H, W) -> (B, G*C, H, W), block g = parts[g]."""
    if channels_last:
        nhwc = torch.stack([p.permute(0, 2, 3, 1) for p in parts], dim=3)   # (B, H, W, G, C)
        return nhwc.flatten(3).permute(0, 3, 1, 2)
    return torch.stack(list(parts), dim=1).flatten(1, 2)


def models_to_channels(x: torch.Tensor, groups: int, *, channels_last: bool = False) -> torch.Tensor:
    """(G*B, C, H, W) batch-stacked (model g's batch at rows g*B..) -> (B, G*C, H, W) channel-stacked."""
    gb, c, h, w = x.shape
    x5 = x.view(groups, gb // groups, c, h, w)
    if channels_last:                                                     # one copy, straight to NHWC
        return x5.permute(1, 3, 4, 0, 2).reshape(gb // groups, h, w, groups * c).permute(0, 3, 1, 2)
    return x5.transpose(0, 1).reshape(gb // groups, groups * c, h, w)


def cat_per_model(a: torch.Tensor, b: torch.Tensor, groups: int) -> torch.Tensor:
    """(B, G*Ca, H, W), (B, G*Cb, H, W) -> (B, G*(Ca+Cb), H, W), block g = [a_g, b_g] (MONAI's skip)."""
    n, _, h, w = a.shape
    if _is_channels_last(a):                                              # stay channels_last
        av = a.permute(0, 2, 3, 1).reshape(n, h, w, groups, -1)
        bv = b.permute(0, 2, 3, 1).reshape(n, h, w, groups, -1)
        return torch.cat([av, bv], dim=4).reshape(n, h, w, -1).permute(0, 3, 1, 2)
    return torch.cat([a.reshape(n, groups, -1, h, w), b.reshape(n, groups, -1, h, w)], dim=2
                     ).reshape(n, -1, h, w)


class _Block(nn.Module):
    """G copies of one MONAI ``Convolution``: conv -> BatchNorm -> Dropout -> PReLU (or conv only)."""

    def __init__(self, groups: int, cin: int, cout: int, stride: int, transposed: bool,
                 conv_only: bool, dropout: float):
        super().__init__()
        self.groups, self.cin, self.cout, self.transposed = groups, cin, cout, transposed
        if transposed:
            self.conv = nn.ConvTranspose2d(groups * cin, groups * cout, 3, stride, padding=1,
                                           output_padding=stride - 1, groups=groups)
        else:
            self.conv = nn.Conv2d(groups * cin, groups * cout, 3, stride, padding=1, groups=groups)
        self.norm = None if conv_only else nn.BatchNorm2d(groups * cout)
        self.drop = None if conv_only else GroupDropout(groups, cout, dropout)
        self.act = None if conv_only else GroupPReLU(groups, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.norm is not None:
            x = self.act(self.drop(self.norm(x)))
        return x

    def tensor_pairs(self, mono: nn.Module, g: int):
        """(stacked tensor, model g's slice of it, the MONAI ``Convolution``'s tensor) for every tensor."""
        rows = self.cin if self.transposed else self.cout  # ConvTranspose2d weight: (in, out/groups, k, k)
        yield self.conv.weight, slice(g * rows, (g + 1) * rows), mono.conv.weight
        yield self.conv.bias, slice(g * self.cout, (g + 1) * self.cout), mono.conv.bias
        if self.norm is not None:
            for name in ("weight", "bias", "running_mean", "running_var"):
                yield (getattr(self.norm, name), slice(g * self.cout, (g + 1) * self.cout),
                       getattr(mono.adn.N, name))
            yield self.act.weight, slice(g, g + 1), mono.adn.A.weight


def monai_blocks(model: nn.Module) -> list[nn.Module]:
    """A MONAI U-Net's ``Convolution`` blocks: down 0..L-2, bottom, up L-2..0 (module order)."""
    node, downs, ups = getattr(model, "model", None), [], []
    while True:
        if not (isinstance(node, nn.Sequential) and len(node) == 3 and isinstance(node[1], SkipConnection)):
            raise TypeError(f"{type(model).__name__} is not a MONAI UNet with num_res_units=0")
        downs.append(node[0])
        ups.append(node[2])
        node = node[1].submodule
        if not (isinstance(node, nn.Sequential) and len(node) == 3 and isinstance(node[1], SkipConnection)):
            return downs + [node] + ups[::-1]


class StackedUNet(nn.Module):
    """G independent copies of ``build_unet(in_channels, out_channels, channels, dropout)``."""

    def __init__(self, groups: int, in_channels: int = 3, out_channels: int = 1,
                 channels: Sequence[int] = (32, 64, 128, 256, 512), dropout: float = 0.0):
        super().__init__()
        ch = tuple(int(c) for c in channels)
        if groups < 1:
            raise ValueError(f"groups={groups}: stack at least one model")
        if len(ch) < 2:
            raise ValueError(f"channels={ch}: a U-Net needs at least 2 levels, e.g. (16, 32, 64)")
        self.groups, self.in_channels, self.out_channels = int(groups), int(in_channels), int(out_channels)
        self.channels, self.dropout = ch, float(dropout)
        top = len(ch) - 2                                                 # deepest level with a skip
        self.down = nn.ModuleList(_Block(groups, in_channels if lv == 0 else ch[lv - 1], ch[lv], 2,
                                         False, False, dropout) for lv in range(top + 1))
        self.bottom = _Block(groups, ch[top], ch[top + 1], 1, False, False, dropout)
        self.up = nn.ModuleList(_Block(groups, ch[lv] + (ch[lv + 1] if lv == top else ch[lv]),
                                       out_channels if lv == 0 else ch[lv - 1], 2, True, lv == 0, dropout)
                                for lv in range(top + 1))

    def blocks(self) -> list[_Block]:
        """Same order as :func:`monai_blocks`."""
        return [*self.down, self.bottom, *reversed(self.up)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:                   # (B, G*in, H, W)
        return self._level(0, x)                                          # (B, G*out, H, W)

    def _level(self, lv: int, x: torch.Tensor) -> torch.Tensor:
        d = self.down[lv](x)
        s = self._level(lv + 1, d) if lv + 1 < len(self.down) else self.bottom(d)
        return self.up[lv](cat_per_model(d, s, self.groups))

    def set_dropout_generators(self, generators: Sequence[torch.Generator] | None) -> None:
        """One generator per model for dropout masks (None: the global generator)."""
        if generators is not None and len(generators) != self.groups:
            raise ValueError(f"{len(generators)} generators for {self.groups} models; pass one per model")
        for mod in self.modules():
            if isinstance(mod, GroupDropout):
                mod.generators = None if generators is None else list(generators)

    @classmethod
    def from_models(cls, models: Sequence[nn.Module]) -> "StackedUNet":
        """Copy G MONAI U-Nets (same architecture, from ``build_unet``) into one stacked network."""
        models = list(models)
        if not models:
            raise ValueError("from_models needs at least one MONAI UNet")
        m0 = models[0]
        for m in models:
            if getattr(m, "num_res_units", None) != 0 or getattr(m, "dimensions", None) != 2:
                raise ValueError("from_models takes 2-D MONAI UNets with num_res_units=0 (build_unet's)")
            if (m.in_channels, m.out_channels, tuple(m.channels), float(m.dropout)) != (
                    m0.in_channels, m0.out_channels, tuple(m0.channels), float(m0.dropout)):
                raise ValueError("the models differ in in/out channels, channels or dropout; stack only "
                                 "models of one architecture")
        net = cls(len(models), m0.in_channels, m0.out_channels, m0.channels, float(m0.dropout))
        net.to(next(m0.parameters()).device)
        with torch.no_grad():
            for g, m in enumerate(models):
                mono = monai_blocks(m)
                if len(mono) != len(net.blocks()):
                    raise ValueError(f"model {g} has {len(mono)} blocks, expected {len(net.blocks())}")
                for blk, mb in zip(net.blocks(), mono):
                    for dst, sl, src in blk.tensor_pairs(mb, g):
                        if dst[sl].shape != src.shape:
                            raise ValueError(f"model {g}: tensor of shape {tuple(src.shape)} where the "
                                             f"stack expects {tuple(dst[sl].shape)}; not build_unet's U-Net")
                        dst[sl].copy_(src)
            for blk, mb in zip(net.blocks(), monai_blocks(m0)):
                if blk.norm is not None:
                    blk.norm.num_batches_tracked.copy_(mb.adn.N.num_batches_tracked)
        return net.train(m0.training)

    def extract(self, g: int) -> nn.Module:
        """Model g as a MONAI U-Net (``build_unet``'s), on this network's device, in its train/eval mode.

        Built on the meta device, so the global random generator is not touched.
        """
        if not 0 <= g < self.groups:
            raise ValueError(f"model {g} does not exist; this stack holds models 0..{self.groups - 1}")
        dev = self.down[0].conv.weight.device
        with torch.device("meta"):
            model = build_unet(self.in_channels, self.out_channels, self.channels, self.dropout)
        model = model.to_empty(device=dev)
        if dev.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        with torch.no_grad():
            for blk, mb in zip(self.blocks(), monai_blocks(model)):
                for src, sl, dst in blk.tensor_pairs(mb, g):
                    dst.copy_(src[sl])
                if blk.norm is not None:
                    mb.adn.N.num_batches_tracked.copy_(blk.norm.num_batches_tracked)
        return model.train(self.training)

    def to_models(self) -> list[nn.Module]:
        return [self.extract(g) for g in range(self.groups)]


def dihedral_with(x: torch.Tensor, y: torch.Tensor, coins: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """``train.dihedral_augment`` with its coins given: x (N, C, S, S), y (N, S, S), coins (3, N) bool."""
    n = x.shape[0]
    fx, fy = coins.view(3, n, 1, 1, 1), coins.view(3, n, 1, 1)
    x = torch.where(fx[0], x.flip(-1), x)
    y = torch.where(fy[0], y.flip(-1), y)
    x = torch.where(fx[1], x.flip(-2), x)
    y = torch.where(fy[1], y.flip(-2), y)
    x = torch.where(fx[2], x.transpose(-1, -2).flip(-1), x)
    y = torch.where(fy[2], y.transpose(-1, -2).flip(-1), y)
    return x, y


def stacked_dice_ce_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """(G,) per-model ``train.dice_ce_loss``: logits (B, G*K, H, W), target (G, B, H, W) class ids."""
    g, b, h, w = target.shape
    lg = logits.float().reshape(b, g, -1, h, w)                          # (B, G, K, H, W)
    t_ids = target.permute(1, 0, 2, 3)                                    # (B, G, H, W)
    if lg.shape[2] == 1:
        lg = lg[:, :, 0]                                                  # (B, G, H, W)
        t = t_ids.float()
        p = torch.sigmoid(lg)
        ce = F.binary_cross_entropy_with_logits(lg, t, reduction="none").mean(dim=(0, 2, 3))
        inter, denom = (p * t).sum(dim=(0, 2, 3)), p.sum(dim=(0, 2, 3)) + t.sum(dim=(0, 2, 3))
        return 1.0 - (2.0 * inter + eps) / (denom + eps) + ce            # (G,)
    classes = torch.arange(lg.shape[2], device=lg.device).view(1, 1, -1, 1, 1)
    t = (t_ids.unsqueeze(2).long() == classes).float()                    # (B, G, K, H, W)
    p = torch.softmax(lg, dim=2)
    ce = F.cross_entropy(lg.transpose(1, 2), t_ids.long(), reduction="none").mean(dim=(0, 2, 3))
    inter = (p * t).sum(dim=(0, 3, 4))                                    # (G, K)
    denom = p.sum(dim=(0, 3, 4)) + t.sum(dim=(0, 3, 4))
    return (1.0 - (2.0 * inter + eps) / (denom + eps)).mean(dim=1) + ce


def train_stacked(images_u8_all: np.ndarray | torch.Tensor, masks_u8_all: np.ndarray | torch.Tensor,
                  subsets: Sequence[np.ndarray], seeds: Sequence[int], cfg: SegConfig, *,
                  device: str | torch.device | None = None, n_classes: int = 2,
                  progress: bool = False) -> list[nn.Module]:
    """Train G = len(subsets) U-Nets at once, model g on ``images_u8_all[subsets[g]]`` with ``seeds[g]``.

    Model g follows ``train_segmenter(images[subsets[g]], masks[subsets[g]], cfg, seed=seeds[g])``
    step for step: the same initial weights (built under the same seeded global generator), batch
    indices and augmentation coins from its own generator seeded the same way and drawn in the same
    order, the same loss, AdamW (element-wise, so one optimiser over the stack is G optimisers) and
    learning-rate schedule. Differences are float rounding only (grouped vs dense convolutions), and
    dropout masks on CUDA (see :class:`GroupDropout`). Returns G MONAI U-Nets in eval mode.
    Like ``train_segmenter`` it seeds the (forked) global generator while building the weights, so it
    must not run concurrently with other code that seeds or draws from the global generator.
    """
    dev = resolve_device(device)
    x_all, y_all = as_tensor(images_u8_all, dev), as_tensor(masks_u8_all, dev)
    n = x_all.shape[0]
    if x_all.ndim != 4 or x_all.shape[1] != 3 or y_all.shape != (n, *x_all.shape[2:]):
        raise ValueError(f"images {tuple(x_all.shape)} and masks {tuple(y_all.shape)} must be "
                         f"(n, 3, S, S) and (n, S, S)")
    side = x_all.shape[-1]
    if x_all.shape[-2] != side or side % min_side(cfg.channels):
        raise ValueError(f"images are {tuple(x_all.shape[-2:])}; they must be square with a side "
                         f"divisible by {min_side(cfg.channels)} for channels={cfg.channels}")
    if cfg.num_res_units != 0:
        raise ValueError(f"num_res_units={cfg.num_res_units}: stacked training covers the plain U-Net "
                         "(num_res_units=0) only; use train_segmenter")
    subsets = [np.asarray(s, dtype=np.int64) for s in subsets]
    seeds = [int(s) for s in seeds]
    if not subsets or len(subsets) != len(seeds):
        raise ValueError(f"{len(subsets)} subsets and {len(seeds)} seeds: pass one seed per subset (>= 1)")
    for g, s in enumerate(subsets):
        if s.ndim != 1 or len(s) == 0:
            raise ValueError(f"subset {g} is empty or not 1-D; label at least one image per model")
        if s.min() < 0 or s.max() >= n:
            raise ValueError(f"subset {g} holds indices outside 0..{n - 1}")
    G, B = len(subsets), cfg.batch_size
    cuda = dev.type == "cuda"
    fmt = torch.channels_last if cuda else torch.contiguous_format
    fork_devices = [dev.index if dev.index is not None else torch.cuda.current_device()] if cuda else []

    models, batch_gens, drop_gens = [], [], []
    for seed in seeds:
        with torch.random.fork_rng(devices=fork_devices):                 # as train_segmenter does
            torch.manual_seed(seed)
            models.append(build_unet(3, n_outputs(n_classes), cfg.channels, cfg.dropout))
            cpu_state = torch.get_rng_state()                             # where its dropout draws start
        batch_gens.append(torch.Generator(device=dev))
        batch_gens[-1].manual_seed(seed + 0x5EED)
        drop_gens.append(torch.Generator(device=dev))
        if cuda:
            drop_gens[-1].manual_seed(seed)
        else:
            drop_gens[-1].set_state(cpu_state)
    net = StackedUNet.from_models(models).to(dev, memory_format=fmt)
    del models
    net.set_dropout_generators(drop_gens if cfg.dropout > 0 else None)

    sizes = [len(s) for s in subsets]
    table = torch.zeros((G, max(sizes)), dtype=torch.long)               # (G, max m) pool indices
    for g, s in enumerate(subsets):
        table[g, : len(s)] = torch.from_numpy(s)
    table = table.to(dev)
    rows = torch.arange(G, device=dev).unsqueeze(1)                       # (G, 1)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                            **({"fused": True} if cuda else {}))
    warmup = max(1, round(cfg.warmup_fraction * cfg.steps)) if cfg.warmup_fraction > 0 else 0
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, cfg.steps, warmup))
    net.train()
    bar = tqdm(range(cfg.steps), desc=f"training {G} stacked U-Nets", unit="step",
               disable=not progress, leave=False)
    for step in bar:
        # per model, in train_segmenter's order: batch indices, then augmentation coins
        idx = torch.stack([torch.randint(0, m, (B,), generator=gen, device=dev)
                           for m, gen in zip(sizes, batch_gens)])         # (G, B) subset positions
        pick = table[rows, idx].view(-1)                                  # (G*B,) pool indices
        x, y = normalise(x_all[pick]), y_all[pick]                       # (G*B, 3, S, S), (G*B, S, S)
        if cfg.augment:
            coins = torch.stack([torch.rand((3, B), generator=gen, device=dev) < 0.5
                                 for gen in batch_gens])                  # (G, 3, B)
            x, y = dihedral_with(x, y, coins.transpose(0, 1).reshape(3, G * B))
        xs = models_to_channels(x, G, channels_last=cuda)                 # (B, G*3, S, S)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cfg.amp and cuda):
            logits = net(xs)                                              # (B, G*K, S, S)
        losses = stacked_dice_ce_loss(logits, y.view(G, B, side, side))  # (G,)
        opt.zero_grad(set_to_none=True)
        losses.sum().backward()
        opt.step()
        sched.step()
        if progress and (step + 1) % cfg.log_every == 0:
            bar.set_postfix(loss=f"{losses.mean().item():.4f}")          # host sync only when shown
    net.eval()
    return net.to_models()


__all__ = ["GroupDropout", "GroupPReLU", "StackedUNet", "cat_per_model", "dihedral_with",
           "models_to_channels", "monai_blocks", "stack_models", "stacked_dice_ce_loss", "train_stacked"]
