"""The guide makers: the least-squares Bezier fit ("fit") and the multi-teacher states, on closed forms."""
from __future__ import annotations

import math

import pytest
import torch

from bezier_distill.config import SolverConfig
from bezier_distill.guides import fit_bezier, multi_teacher_maker


def bezier_points64(P: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
    """Textbook sum_i C(n,i) t^i (1-t)^(n-i) P_i in float64: P [B, n+1, D], times [m] or [B, m] -> [B, m, D]."""
    n = P.shape[1] - 1
    t = times.double() if times.dim() == 2 else times.double().expand(P.shape[0], -1)
    basis = torch.stack([math.comb(n, i) * t**i * (1 - t) ** (n - i) for i in range(n + 1)], dim=-1)
    return basis @ P.double()


# ---------------------------------------------------------------- the "fit" guide maker

@pytest.mark.parametrize("degree, m", [(2, 3), (3, 9), (5, 6), (7, 20)])
@pytest.mark.parametrize("per_sample_times", [False, True])
def test_fit_recovers_the_control_points_of_a_bezier_curve(degree, m, per_sample_times):
    """Points sampled from a known degree-n curve are fitted exactly (to float64 rounding)."""
    gen = torch.Generator().manual_seed(degree * 100 + m)
    B, D = 6, 3
    P = torch.randn(B, degree + 1, D, generator=gen, dtype=torch.float64)
    shape = (B, m) if per_sample_times else (m,)
    times = torch.sort(torch.rand(shape, generator=gen, dtype=torch.float64), dim=-1).values
    points = bezier_points64(P, times)
    guides = fit_bezier(points, times, degree, P[:, 0], P[:, -1])
    assert guides.shape == (B, degree - 1, D) and guides.dtype == torch.float64
    torch.testing.assert_close(guides, P[:, 1:-1], rtol=1e-9, atol=1e-9)


def test_fit_of_a_uniform_straight_line_is_its_degree_elevation():
    """x(t) = x0 + t (x1 - x0) has degree-n control points x0 + i/n (x1 - x0), i = 0..n."""
    x0, x1 = torch.randn(4, 2, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)
    times = torch.linspace(0, 1, 11, dtype=torch.float64)
    points = x0[:, None] + times[None, :, None] * (x1 - x0)[:, None]
    guides = fit_bezier(points, times, 4, x0, x1)
    expected = torch.stack([x0 + i / 4 * (x1 - x0) for i in (1, 2, 3)], dim=1)
    torch.testing.assert_close(guides, expected, rtol=1e-12, atol=1e-12)


def test_fit_keeps_the_endpoints_pinned_on_noisy_points():
    """With noise the fit is least squares; the pinned endpoints never move and the residual is
    orthogonal to the Bernstein columns of the free points (the normal equations)."""
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 2, generator=gen, dtype=torch.float64)
    x1 = torch.randn(3, 2, generator=gen, dtype=torch.float64)
    times = torch.linspace(0, 1, 9, dtype=torch.float64)
    points = torch.randn(3, 9, 2, generator=gen, dtype=torch.float64)
    guides = fit_bezier(points, times, 3, x0, x1)
    P = torch.cat([x0[:, None], guides, x1[:, None]], dim=1)
    residual = bezier_points64(P, times) - points
    basis = torch.stack([math.comb(3, i) * times**i * (1 - times) ** (3 - i) for i in (1, 2)], dim=-1)  # [m, 2]
    torch.testing.assert_close(basis.T @ residual, torch.zeros(3, 2, 2, dtype=torch.float64), rtol=0, atol=1e-12)


def test_fit_needs_enough_points():
    with pytest.raises(ValueError, match="m >= degree \\+ 1 = 4"):
        fit_bezier(torch.zeros(2, 3, 2), torch.linspace(0, 1, 3), 3, torch.zeros(2, 2), torch.zeros(2, 2))


# ---------------------------------------------------------------- the "multi_teacher" guide maker

class ConstantVelocity(torch.nn.Module):
    """v(x, t) = c: the ODE state at time s is x0 + s c exactly, for Euler and Heun alike."""

    def __init__(self, c):
        super().__init__()
        self.c = torch.nn.Parameter(torch.tensor(c, dtype=torch.float64))

    def forward(self, x, t):
        return self.c.expand_as(x)


@pytest.mark.parametrize("method", ["euler", "heun"])
def test_multi_teacher_guides_are_each_teachers_state_at_its_time(method):
    slow, fast = ConstantVelocity([1.0, 0.0]), ConstantVelocity([0.0, 3.0])  # makers take any velocity callable
    maker = multi_teacher_maker([slow, fast], [0.3, 0.7], fast, SolverConfig(method, steps=4))
    x0 = torch.randn(5, 2, dtype=torch.float64)
    out = maker.make(x0)
    torch.testing.assert_close(out["guides"][:, 0], x0 + 0.3 * torch.tensor([1.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(out["guides"][:, 1], x0 + 0.7 * torch.tensor([0.0, 3.0], dtype=torch.float64))
    torch.testing.assert_close(out["x1"], x0 + torch.tensor([0.0, 3.0], dtype=torch.float64))
    per_step = 2 if method == "heun" else 1  # grids: 0, .25, .3 | 0, .25, .5, .7 | the endpoint's 4 steps
    assert maker.degree == 3 and maker.evaluations_per_sample == per_step * (2 + 3 + 4)
