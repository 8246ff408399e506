"""A time-conditioned convolutional UNet for image data [B, C, H, W]: the default network for images.

    stem conv -> per level: `blocks` residual blocks, then a stride-2 conv (levels times)
    -> two residual blocks in the middle
    -> per level, coarse to fine: upsample to the skip's size, concatenate the skip, `blocks` residual blocks
    -> GroupNorm, SiLU, a 3x3 conv to C channels (zero at initialisation: an untrained network predicts 0)
A residual block is GroupNorm-SiLU-conv, plus a per-channel shift from the time embedding, then
GroupNorm-SiLU-conv, added to its input (1x1 conv when the width changes). Widths: width * (1, 2, 2, ...).
Any H and W: a stride-2 conv rounds up and each upsampling goes back to the skip's exact size.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional

from .embedding import SinusoidalTimeEmbedding


def _norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 8 groups (as many as divide the channels)."""
    groups = max(g for g in (8, 4, 2, 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels)


class ConvResidualBlock(nn.Module):
    """h [B, c_in, H, W], time [B, T] -> [B, c_out, H, W]."""

    def __init__(self, c_in: int, c_out: int, time_width: int):
        super().__init__()
        self.norm1, self.conv1 = _norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.time = nn.Linear(time_width, c_out)
        self.norm2, self.conv2 = _norm(c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1)

    def forward(self, h: Tensor, time: Tensor) -> Tensor:
        out = self.conv1(functional.silu(self.norm1(h))) + self.time(time)[:, :, None, None]
        out = self.conv2(functional.silu(self.norm2(out)))
        return self.skip(h) + out


class UNet(nn.Module):
    """v(x, t): x [B, C, H, W], t [B] in [0, 1] -> [B, C, H, W].

    width: channels at full resolution; levels: number of 2x downsamplings; blocks: residual blocks per level;
    in_channels: input channels when they differ from the output's C (networks conditioned on more images
    stacked on x, e.g. CAF's acceleration model on [x, v0]: 2C). `body(h, time)` is the network on an input
    h [B, in_channels, H, W] and an embedded time [B, 4 width], for subclasses whose time input differs.
    """

    def __init__(self, shape: tuple[int, int, int], width: int = 32, levels: int = 2, blocks: int = 1,
                 time_features: int = 64, in_channels: int | None = None):
        super().__init__()
        channels, _, _ = shape
        self.shape = tuple(shape)
        time_width = 4 * width
        self.time_embedding = SinusoidalTimeEmbedding(time_features)
        self.time_mlp = nn.Sequential(nn.Linear(time_features, time_width), nn.SiLU(),
                                      nn.Linear(time_width, time_width))
        widths = [width * min(2 ** level, 2) for level in range(levels + 1)]
        self.stem = nn.Conv2d(in_channels or channels, width, 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        c = width
        for level in range(levels + 1):
            stage = nn.ModuleList()
            for _ in range(blocks):
                stage.append(ConvResidualBlock(c, widths[level], time_width))
                c = widths[level]
            self.down.append(stage)
            if level < levels:
                self.downsample.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
        self.middle = nn.ModuleList([ConvResidualBlock(c, c, time_width), ConvResidualBlock(c, c, time_width)])
        self.up = nn.ModuleList()
        for level in reversed(range(levels)):
            stage = nn.ModuleList([ConvResidualBlock(c + widths[level], widths[level], time_width)])
            c = widths[level]
            stage.extend(ConvResidualBlock(c, c, time_width) for _ in range(blocks - 1))
            self.up.append(stage)
        self.out_norm, self.out = _norm(c), nn.Conv2d(c, channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.body(x, self.time_mlp(self.time_embedding(t.reshape(-1).expand(x.shape[0]))))

    def body(self, x: Tensor, time: Tensor) -> Tensor:
        h = self.stem(x)
        skips = []
        for level, stage in enumerate(self.down):
            for block in stage:
                h = block(h, time)
            if level < len(self.downsample):
                skips.append(h)
                h = self.downsample[level](h)
        for block in self.middle:
            h = block(h, time)
        for stage in self.up:
            skip = skips.pop()
            h = functional.interpolate(h, size=skip.shape[-2:], mode="nearest")
            h = torch.cat([h, skip], dim=1)
            for block in stage:
                h = block(h, time)
        return self.out(functional.silu(self.out_norm(h)))
