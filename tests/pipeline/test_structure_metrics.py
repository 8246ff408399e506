"""Log-density, support, mode coverage and k-NN precision/recall against closed forms and constructed cases."""
from __future__ import annotations

import math

import pytest
import torch

from bezier_distill.data import Mixture, get_distribution
from bezier_distill.evaluation.density import (
    checkerboard_cells,
    mixture_log_density,
    structure_metrics,
    structure_of,
    support_radius,
)
from bezier_distill.evaluation.precision_recall import knn_radii, precision_recall


def test_mixture_log_density_matches_scipy():
    from scipy.stats import multivariate_normal

    means, std, weights = torch.tensor([[0.0, 0.0], [1.0, 2.0], [-3.0, 0.5]]), 0.7, torch.tensor([0.2, 0.3, 0.5])
    x = torch.randn(50, 2, generator=torch.Generator().manual_seed(0)) * 2
    expected = sum(float(w) * multivariate_normal(m.numpy(), std ** 2).pdf(x.numpy()) for m, w in zip(means, weights))
    got = mixture_log_density(x, Mixture(means.double(), std, weights.double()))
    assert torch.allclose(got, torch.from_numpy(expected).log(), rtol=1e-10)


def test_mean_log_density_of_target_samples_is_minus_the_entropy():
    """Separated equal modes: entropy = log K + (D/2) log(2 pi e std^2); the grid's 25 modes are 20 stds apart."""
    grid = get_distribution("grid25")
    x = grid.sample(20000, torch.Generator().manual_seed(1))
    values = structure_metrics(x, structure_of(grid))
    entropy = math.log(25) + math.log(2 * math.pi * math.e * 0.05 ** 2)
    assert values["log_density"] == pytest.approx(-entropy, abs=0.03)
    assert values["in_support"] == pytest.approx(0.999, abs=0.002) and values["mode_coverage"] == 1.0
    assert values["mode_tv"] < 0.03
    blurred = x + 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    assert structure_metrics(blurred, structure_of(grid))["log_density"] < values["log_density"] - 3


def test_support_radius_holds_the_level_of_the_mass():
    x = torch.randn(200000, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 0.4
    inside = float((x.norm(dim=1) <= support_radius(0.4, 3, 0.9)).double().mean())
    assert inside == pytest.approx(0.9, abs=0.003)


def test_mode_coverage_and_tv_of_a_sample_missing_one_of_eight_modes():
    """Equal counts on 7 of the 8 modes: coverage 7/8, TV = 1/2 (7 |1/7 - 1/8| + 1/8) = 1/8 exactly."""
    eight = get_distribution("8gaussians")
    means = eight.mixture.means.float()
    x = means[:7].repeat(10, 1)
    values = structure_metrics(x, structure_of(eight))
    assert values["mode_coverage"] == 7 / 8 and values["mode_tv"] == pytest.approx(1 / 8, abs=1e-12)
    assert values["in_support"] == 1.0
    off = torch.zeros(5, 2)  # the circle's centre: 2 away from every mode, outside their supports
    mixed = structure_metrics(torch.cat([x, off]), structure_of(eight))
    assert mixed["in_support"] == pytest.approx(70 / 75) and mixed["mode_coverage"] == 7 / 8


def test_checkerboard_cells_and_support():
    board = get_distribution("checkerboard")
    x = board.sample(8000, torch.Generator().manual_seed(4))
    assert bool((checkerboard_cells(x) >= 0).all())
    values = structure_metrics(x, structure_of(board))
    assert values["in_support"] == 1.0 and values["mode_coverage"] == 1.0 and values["mode_tv"] < 0.03
    assert "log_density" not in values
    corners = torch.tensor([[-1.5, -1.5], [-0.5, -1.5], [-1.5, -0.5], [0.5, 1.5], [2.5, 0.0], [1.5, 1.5]])
    assert checkerboard_cells(corners).tolist() == [0, -1, -1, -1, -1, 7]
    uniform = 4 * torch.rand(8000, 2, generator=torch.Generator().manual_seed(5)) - 2
    assert structure_metrics(uniform, structure_of(board))["in_support"] == pytest.approx(0.5, abs=0.02)
    one_square = torch.tensor([[-1.5, -1.5]]).repeat(8, 1)  # everything on one square: TV = 1/2 (7/8 + 7/8)
    assert structure_metrics(one_square, structure_of(board))["mode_tv"] == pytest.approx(7 / 8)
    assert structure_of(get_distribution("moons")) is None


def test_knn_radii_and_precision_recall_by_hand():
    real = torch.arange(10.0)[:, None]  # k = 1: every radius is 1
    assert knn_radii(real, 1).tolist() == [1.0] * 10 and knn_radii(real, 2).tolist()[:2] == [2.0, 1.0]
    fake = torch.tensor([[0.5], [100.0]])  # radii within fake (k = 1): 99.5 each, covering all of real
    assert precision_recall(real, fake, k=1) == (0.5, 1.0)
    assert precision_recall(real, real, k=3) == (1.0, 1.0)
    assert precision_recall(real, real + 1000, k=3) == (0.0, 0.0)


def test_precision_recall_tell_mode_collapse_from_blur():
    generator = torch.Generator().manual_seed(6)
    eight = get_distribution("8gaussians")
    real = eight.sample(1000, generator)
    collapsed = real[real[:, 0] > 1.0]  # the modes at x > 1 only (3 of 8): realistic, not diverse
    precision, recall = precision_recall(real, collapsed)
    assert precision > 0.95 and recall < 0.5
    blurred = real + 0.6 * torch.randn(real.shape, generator=generator)  # diverse, not realistic
    precision, recall = precision_recall(real, blurred)
    assert precision < 0.7 and recall > 0.9
