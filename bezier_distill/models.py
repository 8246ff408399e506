"""The velocity network: an MLP on x with a sinusoidal embedding of t, sized for 2-D toys or 8x8 digits."""
from __future__ import annotations

import math
from dataclasses import replace

import torch
from torch import Tensor, nn

from .config import ModelConfig

# (width, depth) for data of at most 8 dimensions (the 2-D toys) and above (the 64-pixel digits)
PRESETS = {"toy": (256, 3), "image": (512, 4)}


def resolve_model(cfg: ModelConfig, dim: int) -> ModelConfig:
    """cfg with width and depth filled in from the preset for data of dimension dim."""
    width, depth = PRESETS["toy" if dim <= 8 else "image"]
    return replace(cfg, width=cfg.width or width, depth=depth if cfg.depth is None else cfg.depth)


class SinusoidalTimeEmbedding(nn.Module):
    """t [B] in [0, 1] -> [B, features]: cos and sin of 1000 t at geometric frequencies 1 .. 1/10000."""

    def __init__(self, features: int, max_period: float = 10000.0):
        super().__init__()
        half = features // 2
        frequencies = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
        self.register_buffer("frequencies", frequencies, persistent=False)

    def forward(self, t: Tensor) -> Tensor:
        angle = 1000.0 * t.float()[:, None] * self.frequencies
        return torch.cat([torch.cos(angle), torch.sin(angle)], dim=1)


class ResidualBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, h: Tensor, time: Tensor) -> Tensor:
        return h + self.mlp(self.norm(h) + time)


class VelocityMLP(nn.Module):
    """v(x, t): x [B, dim], t [B] -> [B, dim]. The time embedding enters every residual block.

    The output layer starts at zero, so an untrained network predicts v = 0.
    """

    def __init__(self, dim: int, width: int, depth: int, time_features: int = 64):
        super().__init__()
        self.dim = dim
        self.time_embedding = SinusoidalTimeEmbedding(time_features)
        self.time_mlp = nn.Sequential(nn.Linear(time_features, width), nn.SiLU(), nn.Linear(width, width))
        self.input = nn.Linear(dim, width)
        self.blocks = nn.ModuleList(ResidualBlock(width) for _ in range(depth))
        self.output = nn.Sequential(nn.LayerNorm(width), nn.SiLU(), nn.Linear(width, dim))
        nn.init.zeros_(self.output[-1].weight)
        nn.init.zeros_(self.output[-1].bias)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        time = self.time_mlp(self.time_embedding(t))
        h = self.input(x) + time
        for block in self.blocks:
            h = block(h, time)
        return self.output(h)


def build_model(cfg: ModelConfig, dim: int) -> VelocityMLP:
    """A fresh network for data of dimension dim (initialised from torch's global RNG)."""
    cfg = resolve_model(cfg, dim)
    return VelocityMLP(dim, cfg.width, cfg.depth, cfg.time_features)
