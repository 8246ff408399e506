"""The metrics against closed forms: identical sets, shifted and scaled sets, Gaussians, known flows."""
from __future__ import annotations

import importlib.util
import math

import pytest
import torch

from bezier_distill.evaluation import metrics
from bezier_distill.samplers import solve_ode, uniform_times

HAS_POT = importlib.util.find_spec("ot") is not None
needs_pot = pytest.mark.skipif(not HAS_POT, reason="POT not installed: pip install POT (the test extra)")
W2_METHODS = [pytest.param("pot", marks=needs_pot), "hungarian"]


def normal(n: int, dim: int, seed: int) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def std_normal_cdf(z: float) -> float:
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


def test_identical_sets_give_zero():
    x = normal(300, 3, 0)
    assert metrics.energy_distance(x, x, unbiased=False) == pytest.approx(0, abs=1e-12)
    assert metrics.mmd_rbf(x, x, unbiased=False) == pytest.approx(0, abs=1e-12)
    assert metrics.sliced_wasserstein2(x, x) == 0
    assert metrics.wasserstein2(x, x, "hungarian") == pytest.approx(0, abs=1e-12)
    if HAS_POT:
        assert metrics.wasserstein2(x, x, "pot") == pytest.approx(0, abs=1e-7)
    assert metrics.frechet_distance(x, x) == pytest.approx(0, abs=1e-9)


@pytest.mark.parametrize("method", W2_METHODS)
def test_exact_w2_of_a_shifted_set_is_the_shift_norm(method):
    """W2^2(P, P + mu) = |mu|^2: translation is the optimal map, also between empirical measures."""
    x = normal(400, 3, 1)
    mu = torch.tensor([0.7, -1.1, 0.4], dtype=torch.float64)
    assert metrics.wasserstein2(x, x + mu, method) == pytest.approx(float(mu.norm()), rel=1e-9)


@pytest.mark.parametrize("method", W2_METHODS)
def test_exact_w2_of_a_scaled_set(method):
    """y = c x (c > 0) is the gradient of the convex c |x|^2 / 2, so it is optimal: W2^2 = (c - 1)^2 E|x|^2."""
    x = normal(300, 2, 2)
    expected = abs(2.5 - 1) * math.sqrt(float(x.square().sum(1).mean()))
    assert metrics.wasserstein2(x, 2.5 * x[torch.randperm(300)], method) == pytest.approx(expected, rel=1e-9)


def test_exact_w2_of_independent_gaussians_approaches_the_shift_norm():
    """N(0, I) vs N(mu, I) in 2-D: W2 = |mu|; two samples of 1500 add a small positive sampling term."""
    mu = torch.tensor([2.0, 0.0], dtype=torch.float64)
    value = metrics.wasserstein2(normal(1500, 2, 3), normal(1500, 2, 4) + mu)
    assert 2.0 <= value <= 2.0 * 1.03


def test_pot_without_pot_is_a_one_line_error_and_auto_falls_back(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ot", None)  # import ot raises ImportError, as where POT is absent
    x = normal(50, 2, 7)
    with pytest.raises(ImportError, match=r"^wasserstein2 with method 'pot' needs POT: pip install POT$"):
        metrics.wasserstein2(x, x + 1, "pot")
    assert metrics.wasserstein2(x, x + 1) == pytest.approx(math.sqrt(2), rel=1e-9)  # auto: hungarian


@needs_pot
def test_pot_and_hungarian_agree_and_unequal_sizes_match_the_1d_quantile_formula():
    x, y = normal(200, 4, 5), normal(200, 4, 6) * 1.5 + 0.3
    assert metrics.wasserstein2(x, y, "pot") == pytest.approx(metrics.wasserstein2(x, y, "hungarian"), rel=1e-9)
    a, b = normal(7, 1, 7), normal(11, 1, 8) + 0.5  # 1-D, unequal sizes: exact W2 = the sliced value
    assert metrics.sliced_wasserstein2(a, b, directions=torch.ones(1, 1)) == pytest.approx(
        metrics.wasserstein2(a, b, "pot"), rel=1e-9)
    with pytest.raises(ValueError, match="equal sample sizes"):
        metrics.wasserstein2(a, b, "hungarian")


def test_sliced_w2_of_shifted_sets():
    """y = x + mu: each projection is shifted by theta . mu, so SW2^2 = mean over theta of (theta . mu)^2:
    |mu|^2 in 1-D, |mu|^2 / 2 for evenly spaced directions in 2-D, |mu|^2 / D in expectation in D dims."""
    x1 = normal(500, 1, 9)
    assert metrics.sliced_wasserstein2(x1, x1 - 1.3) == pytest.approx(1.3, rel=1e-9)
    x2, mu2 = normal(500, 2, 10), torch.tensor([1.2, -0.5], dtype=torch.float64)
    angles = torch.arange(16, dtype=torch.float64) * math.pi / 16
    even = torch.stack([angles.cos(), angles.sin()], 1)
    assert metrics.sliced_wasserstein2(x2, x2 + mu2, directions=even) == pytest.approx(1.3 / math.sqrt(2), rel=1e-9)
    x5, mu5 = normal(500, 5, 11), torch.full((5,), 0.6, dtype=torch.float64)
    value = metrics.sliced_wasserstein2(x5, x5 + mu5, projections=4000, generator=torch.Generator().manual_seed(0))
    assert value == pytest.approx(float(mu5.norm()) / math.sqrt(5), rel=0.03)


def test_sliced_w2_of_independent_1d_gaussians():
    """N(0, 1) vs N(mu, s^2) in 1-D: W2^2 = mu^2 + (1 - s)^2."""
    value = metrics.sliced_wasserstein2(normal(20000, 1, 12), 0.5 * normal(15000, 1, 13) + 1.0, projections=2)
    assert value == pytest.approx(math.sqrt(1.0 + 0.25), rel=0.01)


def test_energy_distance_of_1d_gaussians_matches_the_closed_form():
    """N(0, 1) vs N(mu, 1): 2 E|X - Y| - 2 E|X - X'| with X - Y ~ N(-mu, 2) and E|X - X'| = 2 / sqrt(pi)."""
    mu = 1.0
    between = 2 / math.sqrt(math.pi) * math.exp(-mu**2 / 4) + mu * (1 - 2 * std_normal_cdf(-mu / math.sqrt(2)))
    expected = 2 * between - 2 * (2 / math.sqrt(math.pi))
    # five independent estimates of 3000 + 3000 points: the mean has a standard deviation of about 0.01
    estimates = [metrics.energy_distance(normal(3000, 1, 14 + i), normal(3000, 1, 24 + i) + mu) for i in range(5)]
    assert sum(estimates) / 5 == pytest.approx(expected, abs=0.035)
    assert abs(metrics.energy_distance(normal(3000, 1, 34), normal(3000, 1, 35))) < 0.03  # unbiased: ~0


def test_energy_distance_grows_with_the_shift_between_2d_gaussians():
    gen = torch.Generator().manual_seed(2)
    x, y = torch.randn(1000, 2, generator=gen), torch.randn(1000, 2, generator=gen)
    same = metrics.energy_distance(x, y)
    assert abs(same) < 0.01
    shifts = [metrics.energy_distance(x, y + torch.tensor([s, 0.0])) for s in (0.5, 1.0, 2.0)]
    assert shifts[0] > 10 * abs(same) and shifts[0] < shifts[1] < shifts[2]


def test_mmd_of_gaussians_matches_the_closed_form():
    """Gaussian kernel of bandwidth b, N(0, I) vs N(mu, I) in D dims:
    MMD^2 = 2 (b^2 / (b^2 + 2))^(D/2) (1 - exp(-|mu|^2 / (2 (b^2 + 2))))."""
    b, mu = 1.0, torch.tensor([1.0, 0.0], dtype=torch.float64)
    expected = 2 * (b**2 / (b**2 + 2)) * (1 - math.exp(-float(mu.square().sum()) / (2 * (b**2 + 2))))
    value = metrics.mmd_rbf(normal(3000, 2, 18), normal(3000, 2, 19) + mu, bandwidth=b)
    assert value == pytest.approx(expected, abs=0.01)
    assert abs(metrics.mmd_rbf(normal(3000, 2, 20), normal(3000, 2, 21))) < 0.003


@pytest.mark.parametrize("metric", [metrics.energy_distance, metrics.mmd_rbf])
def test_energy_distance_and_mmd_are_symmetric_and_grow_with_the_shift(metric):
    x, noise = normal(800, 2, 22), normal(600, 2, 23)
    values = []
    for shift in (0.25, 0.5, 1.0, 2.0):
        y = noise + torch.tensor([shift, 0.0], dtype=torch.float64)
        assert metric(x, y) == pytest.approx(metric(y, x), rel=1e-12, abs=1e-15)
        values.append(metric(x, y))
    assert all(a < b for a, b in zip(values, values[1:])), values


def test_median_bandwidth_is_the_median_pairwise_distance():
    points = torch.tensor([[0.0], [1.0], [3.0]], dtype=torch.float64)  # distances 1, 3, 2 -> median 2
    assert metrics.median_bandwidth(points[:2], points[2:]) == 2.0


def test_frechet_distance_of_gaussian_fits():
    """Shift: |mu|^2. Scale by c: (c - 1)^2 (|mean|^2 + Tr cov). Diagonal covariances: sum (sqrt a - sqrt b)^2.
    Non-commuting covariances: the trace formula with scipy's matrix square root."""
    from scipy.linalg import sqrtm

    x, mu = normal(500, 4, 24), torch.tensor([0.5, -1.0, 0.0, 2.0], dtype=torch.float64)
    assert metrics.frechet_distance(x, x + mu) == pytest.approx(float(mu.square().sum()), rel=1e-9)
    expected = (1.7 - 1) ** 2 * float(x.mean(0).square().sum() + torch.cov(x.T).trace())
    assert metrics.frechet_distance(x, 1.7 * x) == pytest.approx(expected, rel=1e-9)
    zero = torch.zeros(2, dtype=torch.float64)
    cov_a, cov_b = torch.diag(torch.tensor([4.0, 1.0])), torch.diag(torch.tensor([1.0, 9.0]))
    diag = metrics.gaussian_frechet(zero, cov_a, zero, cov_b)
    assert diag == pytest.approx((2 - 1) ** 2 + (1 - 3) ** 2, rel=1e-12)
    a, b = normal(3, 3, 25), normal(3, 3, 26)
    cov_x, cov_y = a @ a.T + torch.eye(3), b @ b.T + 0.5 * torch.eye(3)
    reference = float(torch.trace(cov_x + cov_y).item() - 2 * sqrtm(cov_x.numpy() @ cov_y.numpy()).real.trace())
    value = metrics.gaussian_frechet(zero.new_zeros(3), cov_x, zero.new_zeros(3), cov_y)
    assert value == pytest.approx(reference, rel=1e-9)


def test_straightness_of_known_flows():
    """Constant velocity: 0. v = x (straight rays, speed e^t): |x0|^2 ((e^2 - 1) / 2 - (e - 1)^2).
    Rotation v = J x (unit circles at constant speed): |x0|^2 (2 cos 1 - 1)."""
    x0 = normal(64, 2, 27)
    times = uniform_times(400)
    _, states = solve_ode(lambda x, t: torch.ones_like(x) * torch.tensor([0.3, -2.0], dtype=x.dtype), x0, times,
                          record=True)
    assert metrics.straightness(states, times) == pytest.approx(0, abs=1e-20)
    energy = float(x0.square().sum(1).mean())
    _, states = solve_ode(lambda x, t: x, x0, times, "heun", record=True)
    expected = energy * ((math.e**2 - 1) / 2 - (math.e - 1) ** 2)
    assert metrics.straightness(states, times) == pytest.approx(expected, rel=1e-4)
    rotate = torch.tensor([[0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)  # x @ rotate = J x
    _, states = solve_ode(lambda x, t: x @ rotate, x0, times, "heun", record=True)
    assert metrics.straightness(states, times) == pytest.approx(energy * (2 * math.cos(1) - 1), rel=1e-4)


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="x has 2 features, y has 3"):
        metrics.energy_distance(normal(5, 2, 0), normal(5, 3, 0))
    with pytest.raises(ValueError, match="at least 2 samples"):
        metrics.mmd_rbf(normal(1, 2, 0), normal(5, 2, 0))
    with pytest.raises(ValueError, match="directions must be"):
        metrics.sliced_wasserstein2(normal(5, 2, 0), normal(5, 2, 0), directions=torch.ones(3, 3))
    with pytest.raises(ValueError, match="states \\[B, K\\+1, D\\]"):
        metrics.straightness(torch.zeros(2, 3, 2), torch.zeros(4))
