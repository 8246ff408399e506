"""Sample-quality metrics. For now the energy distance that `sample` reports and the tests use."""
from __future__ import annotations

import torch
from torch import Tensor


def energy_distance(x: Tensor, y: Tensor) -> float:
    """Squared energy distance 2 E|X - Y| - E|X - X'| - E|Y - Y'| between samples x [n, D] and y [m, D].

    Within-set means leave out the zero diagonal (unbiased U-statistics); zero in expectation when
    both samples come from one distribution, positive otherwise. Computed in float64.
    """
    x, y = x.double().flatten(1), y.double().flatten(1)
    n, m = x.shape[0], y.shape[0]
    if n < 2 or m < 2:
        raise ValueError(f"energy_distance needs at least 2 samples on each side, got {n} and {m}")
    between = torch.cdist(x, y).mean()
    within_x = torch.cdist(x, x).sum() / (n * (n - 1))
    within_y = torch.cdist(y, y).sum() / (m * (m - 1))
    return float(2 * between - within_x - within_y)
