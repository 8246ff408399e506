"""The sinusoidal embedding of the time t that every built-in network is conditioned on."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn


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
