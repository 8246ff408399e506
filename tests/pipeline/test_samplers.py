"""The samplers: Euler and Heun against their discrete closed forms, the ODE grid, and sample_on_bezier
on a family of Bezier paths with a known exact student and guide map.

sample_on_bezier on a family of Bezier paths with a known exact student and guide map.

Linear family in 2-D: x1 = A x0, guides G_j = C_j x0, so B(t) = M(t) x0 with
M(t) = b_0(t) I + b_1(t) C_1 + b_2(t) C_2 + b_3(t) A. The exact endpoint student at (x, t) recovers
x0 = M(t)^-1 x and predicts x1 = A x0, i.e. f(x, t) = (A M(t)^-1 x - x) / (1 - t).
"""
from __future__ import annotations

import pytest
import torch

import bezier_kernels as bk
from bezier_distill.samplers import ode_grid, sample, sample_on_bezier, solve_ode, uniform_times


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


# ---------------------------------------------------------------- sample_on_bezier

A = torch.tensor([[1.5, 0.4], [-0.3, 1.2]], dtype=torch.float64)
C = torch.tensor([[[1.2, -0.8], [0.6, 1.1]], [[1.6, -0.2], [0.9, 0.9]]], dtype=torch.float64)


def path_matrix(t: float) -> torch.Tensor:
    w = bk.bernstein_weights(torch.tensor([t], dtype=torch.float64), 3)[0]
    return w[0] * torch.eye(2, dtype=torch.float64) + w[1] * C[0] + w[2] * C[1] + w[3] * A


def exact_student(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    time = float(t[0])
    x0 = torch.linalg.solve(path_matrix(time), x.T).T
    return (x0 @ A.T - x) / (1 - time)


def exact_guide_map(stacked: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    x0 = stacked[:, :2]
    return torch.cat([x0 @ C[0].T - x0, x0 @ C[1].T - x0], dim=1)


def test_the_family_is_invertible_on_every_sampler_time():
    for t in (0, 1 / 4, 1 / 3, 1 / 2, 2 / 3, 3 / 4):
        assert abs(float(torch.linalg.det(path_matrix(t)))) > 0.3


@pytest.mark.parametrize("steps", [1, 2, 3, 4])
def test_exact_student_and_guide_map_stay_on_the_path_for_any_number_of_steps(steps):
    x0 = torch.randn(50, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x1, states = sample_on_bezier(exact_student, x0, steps, exact_guide_map, degree=3, record=True)
    torch.testing.assert_close(x1, x0 @ A.T, rtol=1e-10, atol=1e-10)
    guides = torch.stack([x0 @ C[0].T, x0 @ C[1].T], dim=1)
    for k, t in enumerate(uniform_times(steps).tolist()):
        (on_path,) = bk.bezier(x0, x0 @ A.T, torch.full((50,), t, dtype=torch.float64), guides, orders=(0,))
        torch.testing.assert_close(states[:, k], on_path, rtol=1e-10, atol=1e-10)


def test_the_line_re_entry_leaves_the_curve_and_misses():
    """The plain Euler sampler of the same exact student: its 2-step state is the chord midpoint, not B(1/2)."""
    x0 = torch.randn(50, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x1, _ = solve_ode(exact_student, x0, uniform_times(2))
    assert float((x1 - x0 @ A.T).norm(dim=1).mean()) > 0.05


def test_degree_one_re_entry_is_the_euler_endpoint_sampler_at_two_steps():
    weight = torch.tensor([[0.9, -0.4], [0.3, 0.7]], dtype=torch.float64)

    def student(x, t):
        return torch.tanh(x @ weight) * (1 + t[:, None])

    x0 = torch.randn(30, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    ours, _ = sample_on_bezier(student, x0, 2)
    euler, _ = solve_ode(student, x0, uniform_times(2))
    torch.testing.assert_close(ours, euler, rtol=1e-14, atol=1e-14)
    with pytest.raises(ValueError, match="needs a guide_map"):
        sample_on_bezier(student, x0, 2, degree=3)


def test_images_are_sampled_as_their_vectors_with_the_student_seeing_the_image_shape():
    """x0 [B, 1, 1, 2] (an image of the 2-D family): the student gets [B, 1, 1, 2], the guide map the stacked
    vectors; the sample and the states keep the image shape and equal the vectors' run."""
    seen = []

    def image_student(x, t):
        seen.append(x.shape[1:])
        return exact_student(x.flatten(1), t).reshape(x.shape)

    x0 = torch.randn(20, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    flat, flat_states = sample_on_bezier(exact_student, x0, 3, exact_guide_map, degree=3, record=True)
    image, states = sample_on_bezier(image_student, x0.reshape(20, 1, 1, 2), 3, exact_guide_map, degree=3,
                                     record=True)
    assert image.shape == (20, 1, 1, 2) and states.shape == (20, 4, 1, 1, 2) and set(seen) == {(1, 1, 2)}
    torch.testing.assert_close(image.flatten(1), flat, rtol=0, atol=0)
    torch.testing.assert_close(states.flatten(2), flat_states, rtol=0, atol=0)
