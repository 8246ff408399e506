"""Closed-form checks of the pipeline's maths: ODE steps, the least-squares Bezier fit, time sampling."""
from __future__ import annotations

import math

import pytest
import torch

from bezier_distill.config import SolverConfig
from bezier_distill.guides import fit_bezier, multi_teacher_maker
from bezier_distill.evaluation.metrics import energy_distance
from bezier_distill.samplers import ode_grid, sample, solve_ode
from bezier_distill.timesteps import sample_times



def bezier_points64(P: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
    """Textbook sum_i C(n,i) t^i (1-t)^(n-i) P_i in float64: P [B, n+1, D], times [m] or [B, m] -> [B, m, D]."""
    n = P.shape[1] - 1
    t = times.double() if times.dim() == 2 else times.double().expand(P.shape[0], -1)
    basis = torch.stack([math.comb(n, i) * t**i * (1 - t) ** (n - i) for i in range(n + 1)], dim=-1)
    return basis @ P.double()


# ---------------------------------------------------------------- samplers

@pytest.mark.parametrize("steps", [1, 3, 10])
def test_euler_and_heun_match_their_discrete_closed_forms(steps):
    """dx/dt = a x: Euler gives x0 (1 + a h)^N, Heun x0 (1 + a h + (a h)^2 / 2)^N."""
    a, h = -0.7, 1.0 / steps
    x0 = torch.randn(5, 3, dtype=torch.float64)
    euler = sample(lambda x, t: a * x, x0, steps, "euler")
    heun = sample(lambda x, t: a * x, x0, steps, "heun")
    torch.testing.assert_close(euler, x0 * (1 + a * h) ** steps, rtol=1e-14, atol=0)
    torch.testing.assert_close(heun, x0 * (1 + a * h + (a * h) ** 2 / 2) ** steps, rtol=1e-14, atol=0)


def test_solvers_pass_the_grid_time_and_record_every_state():
    """dx/dt = t: Euler sums left endpoints, (N - 1) / (2N); Heun is the trapezoid rule, exact 1/2."""
    steps = 4
    x0 = torch.zeros(2, 1, dtype=torch.float64)
    grid = torch.linspace(0, 1, steps + 1, dtype=torch.float64)
    final, states = solve_ode(lambda x, t: t[:, None].expand_as(x), x0, grid, "euler", record=True)
    assert states.shape == (2, steps + 1, 1)
    torch.testing.assert_close(final, torch.full_like(x0, (steps - 1) / (2 * steps)), rtol=1e-15, atol=1e-15)
    torch.testing.assert_close(states[:, :, 0], (grid * (grid - 1 / steps) / 2).expand(2, -1), rtol=0, atol=1e-15)
    heun, _ = solve_ode(lambda x, t: t[:, None].expand_as(x), x0, grid, "heun")
    torch.testing.assert_close(heun, torch.full_like(x0, 0.5), rtol=0, atol=1e-15)


def test_solver_runs_without_autograd():
    weight = torch.tensor(2.0, requires_grad=True)
    out = sample(lambda x, t: weight * x, torch.ones(3, 2), 2)
    assert not out.requires_grad


def test_ode_grid_puts_requested_times_on_the_uniform_grid():
    torch.testing.assert_close(ode_grid([0.3], 4), torch.tensor([0.0, 0.25, 0.3], dtype=torch.float64))
    grid = ode_grid([0.5 + 1e-12, 1.0], 4)  # a time next to a grid point replaces it
    assert grid.tolist() == [0.0, 0.25, 0.5 + 1e-12, 0.75, 1.0]


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
    x0, x1 = torch.randn(3, 2, generator=gen, dtype=torch.float64), torch.randn(3, 2, generator=gen, dtype=torch.float64)
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


# ---------------------------------------------------------------- time sampling

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


# ---------------------------------------------------------------- the energy distance

def test_energy_distance_is_near_zero_for_one_distribution_and_grows_with_a_shift():
    gen = torch.Generator().manual_seed(2)
    x, y = torch.randn(1000, 2, generator=gen), torch.randn(1000, 2, generator=gen)
    same = energy_distance(x, y)
    assert abs(same) < 0.01
    shifts = [energy_distance(x, y + torch.tensor([s, 0.0])) for s in (0.5, 1.0, 2.0)]
    assert shifts[0] > 10 * abs(same) and shifts[0] < shifts[1] < shifts[2]
    # for N(0, 1) against N(s, 1) in one dimension: 2 E|Z sqrt2 + s| - 2 E|Z sqrt2| (Z standard normal)
    u, v = torch.randn(4000, 1, generator=gen), torch.randn(4000, 1, generator=gen)
    s = 1.0
    sigma = math.sqrt(2.0)
    folded = sigma * math.sqrt(2 / math.pi) * math.exp(-s * s / (2 * sigma * sigma)) + s * math.erf(s / (sigma * math.sqrt(2)))
    exact = 2 * folded - 2 * sigma * math.sqrt(2 / math.pi)
    assert abs(energy_distance(u, v + s) - exact) < 0.03
