"""Training times t in [0, 1]: uniform, U-shaped, or a fixed grid.

u_shaped has density p(t) = a (exp(a t) + exp(a (1 - t))) / (2 (exp(a) - 1)), more weight near both
ends of the path. It is an even mixture of the densities proportional to exp(a t) and to
exp(a (1 - t)), each drawn exactly by its inverse CDF s = log(1 + u (exp(a) - 1)) / a.
grid draws t uniformly from {0, 1/K, ..., (K-1)/K}: the times at which a K-step Euler sampler
queries the network.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

KINDS = ("uniform", "u_shaped", "grid")


def sample_times(kind: str, n: int, generator: torch.Generator, *, a: float = 4.0, grid_size: int = 8) -> Tensor:
    """n training times [n] (float32, CPU) of the given kind, drawn from generator."""
    if kind == "uniform":
        return torch.rand(n, generator=generator)
    if kind == "u_shaped":
        u = torch.rand(n, generator=generator, dtype=torch.float64)
        late = torch.rand(n, generator=generator) < 0.5
        s = torch.log1p(u * math.expm1(a)) / a  # density ~ exp(a s) on [0, 1]
        return torch.where(late, s, 1.0 - s).float()
    if kind == "grid":
        return torch.randint(grid_size, (n,), generator=generator).float() / grid_size
    raise ValueError(f"time sampling must be one of {KINDS}, got {kind!r}")
