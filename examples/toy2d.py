"""2-D toy data, a guide provider and a sample-quality measure shared by the drop-in examples."""
import math

import torch


def checkerboard(n: int) -> torch.Tensor:
    """flow_matching's 2-D toy: uniform on the 8 dark squares of a 4x4 board over [-2, 2]^2, scaled by 1/0.45."""
    square = torch.randint(0, 8, (n,))
    row = square // 2
    col = 2 * (square % 2) + row % 2
    return (torch.stack([col, row], dim=1) + torch.rand(n, 2) - 2.0) / 0.45


def eight_gaussians(n: int) -> torch.Tensor:
    """torchcfm's source toy: 8 Gaussians (std 0.5) on a circle of radius 5."""
    angle = torch.randint(0, 8, (n,)) * (math.pi / 4)
    return 5 * torch.stack([angle.cos(), angle.sin()], dim=1) + 0.5 * torch.randn(n, 2)


def two_moons(n: int) -> torch.Tensor:
    """torchcfm's target toy: two interleaved half circles, centred, scaled by 3, noise std 0.1."""
    angle = torch.rand(n) * math.pi
    upper = torch.rand(n) < 0.5
    x = torch.where(upper, angle.cos(), 1 - angle.cos()) - 0.5
    y = torch.where(upper, angle.sin(), 0.5 - angle.sin()) - 0.25
    return 3 * torch.stack([x, y], dim=1) + 0.1 * torch.randn(n, 2)


def bend_sideways(x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """A guide provider (x0, x1 [B, 2]) -> guides [B, 1, 2]: one guide per pair, the chord's midpoint
    moved a quarter chord length to its left, so every path is a quadratic that curves. (In Bezier
    distillation the guides come from a teacher's trajectories instead.)"""
    chord = x1 - x0
    return ((x0 + x1) / 2 + 0.25 * torch.stack([-chord[:, 1], chord[:, 0]], dim=1)).unsqueeze(1)


def energy_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """2 E|X - Y| - E|X - X'| - E|Y - Y'| between two samples [N, 2] (V-statistic): 0 iff they agree."""
    return (2 * torch.cdist(x, y).mean() - torch.cdist(x, x).mean() - torch.cdist(y, y).mean()).item()


def report(samples: torch.Tensor, start: torch.Tensor, data: torch.Tensor) -> float:
    """Prints and returns the samples' energy distance to held-out data, beside that of their start points."""
    quality = energy_distance(samples, data)
    print(f"energy distance to the data: samples {quality:.3f}, their start points {energy_distance(start, data):.3f}")
    return quality
