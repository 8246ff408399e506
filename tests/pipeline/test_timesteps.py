"""Training-time sampling: the U-shaped density, uniform and grid times."""
from __future__ import annotations

import math

import torch

from bezier_distill.timesteps import sample_times


def u_shaped_cdf(t: torch.Tensor, a: float) -> torch.Tensor:
    """CDF of the density proportional to exp(a t) + exp(a (1 - t)) on [0, 1]."""
    return (torch.exp(a * t) - 1 + math.exp(a) - torch.exp(a * (1 - t))) / (2 * (math.exp(a) - 1))


def ks_statistic(samples: torch.Tensor, cdf) -> float:
    x = torch.sort(samples.double()).values
    n = x.numel()
    F = cdf(x)
    upper = torch.arange(1, n + 1, dtype=torch.float64) / n - F
    lower = F - torch.arange(n, dtype=torch.float64) / n
    return float(torch.maximum(upper, lower).max())


def test_u_shaped_times_follow_their_density():
    n, a = 20000, 4.0
    t = sample_times("u_shaped", n, torch.Generator().manual_seed(0), a=a)
    assert t.dtype == torch.float32 and t.min() >= 0 and t.max() <= 1
    critical = 1.63 / math.sqrt(n)  # Kolmogorov-Smirnov, 1% level
    assert ks_statistic(t, lambda x: u_shaped_cdf(x, a)) < critical
    assert ks_statistic(t, lambda x: x) > 5 * critical  # and it is clearly not uniform


def test_uniform_and_grid_times():
    gen = torch.Generator().manual_seed(1)
    n = 20000
    assert ks_statistic(sample_times("uniform", n, gen), lambda x: x) < 1.63 / math.sqrt(n)
    grid = sample_times("grid", n, gen, grid_size=5)
    assert torch.equal(torch.unique(grid), torch.arange(5, dtype=torch.float32) / 5)
    assert (torch.bincount((grid * 5).round().long()) > n / 5 * 0.9).all()
