"""ResNet-18-style backbone (He et al. 2016), written out so width and stem are explicit arguments.

The stem is the ImageNet one (7×7 stride 2 + max-pool): at 128 px the last stage is 4×4, at 64 px 2×2.
Normalisation layers are injected (default BatchNorm2d); MoCo's shuffle-BN is done by encoding
sub-batches separately (see moco.py), which keeps cuDNN's fused batch norm and channels_last.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

NormFactory = Callable[[int], nn.Module]


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, norm: NormFactory):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = norm(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = norm(cout)
        self.short = None
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), norm(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.short is None else self.short(x)), inplace=True)


class ResNetEncoder(nn.Module):
    """(B, in_channels, H, W) -> (B, out_dim) globally average-pooled features; out_dim = 8 * width."""

    def __init__(self, in_channels: int = 3, width: int = 64, layers: tuple[int, ...] = (2, 2, 2, 2),
                 norm: NormFactory = nn.BatchNorm2d):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 7, 2, 3, bias=False), norm(width), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        )
        stages, cin = [], width
        for i, n_blocks in enumerate(layers):
            cout = width * 2**i
            blocks = [BasicBlock(cin if b == 0 else cout, cout, 2 if (b == 0 and i > 0) else 1, norm)
                      for b in range(n_blocks)]
            stages.append(nn.Sequential(*blocks))
            cin = cout
        self.stages = nn.Sequential(*stages)
        self.out_dim = cin
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))  # (B, out_dim, H/32, W/32)
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)  # (B, out_dim)

    def stage_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The globally average-pooled output of every stage, shallow to deep: (B, width · 2^i) each;
        the last one is :meth:`forward`'s output."""
        x, out = self.stem(x), []
        for stage in self.stages:
            x = stage(x)
            out.append(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
        return out


def resnet18(width: int = 64) -> ResNetEncoder:
    return ResNetEncoder(3, width, (2, 2, 2, 2), nn.BatchNorm2d)
