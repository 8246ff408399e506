"""The float64 reference against exact rational arithmetic, de Casteljau and closed forms."""
from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F

import bezier_kernels as bk
from bezier_kernels import reference


def exact_weights(t: float, n: int, order: int) -> list[Fraction]:
    """w_order[i] of docs/spec.md section 1 in exact rational arithmetic."""
    tf = Fraction(t)
    m = n - order
    if m < 0:
        return [Fraction(0)] * (n + 1)
    basis = [math.comb(m, i) * tf**i * (1 - tf) ** (m - i) for i in range(m + 1)]
    for _ in range(order):
        padded = [Fraction(0)] + basis + [Fraction(0)]
        basis = [padded[i] - padded[i + 1] for i in range(len(padded) - 1)]
    return [math.perm(n, order) * b for b in basis]


@pytest.mark.parametrize("n", [1, 2, 5, 64, 200, 512])
@pytest.mark.parametrize("order", [0, 1, 2, 3])
def test_weights_match_exact_rationals(n, order):
    ts = [0.0, 1.0, 0.5, 0.3, 0.97, 1e-3]
    if n <= 64:
        ts += [-0.5, 1.5]  # extrapolation
    w = bk.bernstein_weights(torch.tensor(ts, dtype=torch.float64), n, order)
    assert w.dtype == torch.float64 and w.shape == (len(ts), n + 1)
    for row, t in zip(w, ts):
        exact = torch.tensor([float(v) for v in exact_weights(t, n, order)], dtype=torch.float64)
        err = (row - exact).norm() / exact.norm() if exact.norm() > 0 else (row - exact).norm()
        assert err < 1e-12, (t, err)


def test_weights_partition_of_unity_and_derivative_sums():
    t = torch.rand(50, dtype=torch.float64)
    for n in (1, 3, 64, 512):
        assert torch.allclose(bk.bernstein_weights(t, n, 0).sum(1), torch.ones(50, dtype=torch.float64), atol=1e-12)
        for k in (1, 2):
            scale = bk.bernstein_weights(t, n, k).abs().sum(1)
            assert (bk.bernstein_weights(t, n, k).sum(1).abs() <= 1e-12 * scale + 1e-300).all()


def test_weights_are_differentiable_in_t():
    """d/dt of the order-k weights equals the order-(k+1) weights (autograd through the basis)."""
    t = torch.tensor([0.0, 0.2, 0.5, 0.9, 1.0], dtype=torch.float64, requires_grad=True)
    for n in (1, 4, 30):
        for k in range(min(n, 2) + 1):  # past order n the weights are the constant 0
            w = reference.bernstein_weights(t, n, k)
            (dw,) = torch.autograd.grad(w.sum(0) @ torch.arange(n + 1.0, dtype=torch.float64), t)
            expected = reference.bernstein_weights(t.detach(), n, k + 1) @ torch.arange(n + 1.0, dtype=torch.float64)
            assert torch.allclose(dw, expected, rtol=1e-10, atol=1e-10)


def de_casteljau(points: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Naive float64 de Casteljau: points [B, m+1, D], t [B] -> [B, D]."""
    p = points.clone()
    tt = t.reshape(-1, 1, 1)
    while p.shape[1] > 1:
        p = (1 - tt) * p[:, :-1] + tt * p[:, 1:]
    return p[:, 0]


@pytest.mark.parametrize("n", [1, 3, 17, 200])
def test_reference_matches_de_casteljau(n):
    gen = torch.Generator().manual_seed(n)
    P = torch.randn(6, n + 1, 5, generator=gen, dtype=torch.float64)
    t = torch.tensor([0.0, 1.0, 0.5, 0.25, 0.8, 0.013], dtype=torch.float64)
    pos, vel, acc = bk.bezier_stacked(P, t, orders=(0, 1, 2), backend="torch")
    d1 = n * (P[:, 1:] - P[:, :-1])
    expect_pos = de_casteljau(P, t)
    expect_vel = de_casteljau(d1, t)
    expect_acc = de_casteljau((n - 1) * (d1[:, 1:] - d1[:, :-1]), t) if n > 1 else torch.zeros_like(expect_pos)
    assert (pos - expect_pos).norm() / expect_pos.norm() < 1e-12
    assert (vel - expect_vel).norm() / expect_vel.norm() < 1e-12
    assert (acc - expect_acc).norm() <= 1e-12 * max(expect_acc.norm().item(), 1.0)
    assert torch.equal(pos[0], P[0, 0]) and torch.equal(pos[1], P[1, n])


@pytest.mark.parametrize("n", [2, 5, 40])
def test_reference_velocity_is_time_derivative_of_position(n):
    P = torch.randn(4, n + 1, 3, dtype=torch.float64)
    t = torch.rand(4, dtype=torch.float64, requires_grad=True)
    pos, vel, acc = bk.bezier_stacked(P, t, orders=(0, 1, 2), backend="torch")
    for out, deriv in ((pos, vel), (vel, acc)):
        for d in range(3):
            (g,) = torch.autograd.grad(out[:, d].sum(), t, retain_graph=True)
            assert torch.allclose(g, deriv[:, d].detach(), rtol=1e-9, atol=1e-9)


def test_degree_one_is_the_rectified_flow_line():
    x0, x1 = torch.randn(9, 4, dtype=torch.float64), torch.randn(9, 4, dtype=torch.float64)
    t = torch.rand(9, dtype=torch.float64)
    pos, vel, acc = bk.bezier(x0, x1, t, orders=(0, 1, 2), backend="torch")
    assert torch.allclose(pos, (1 - t[:, None]) * x0 + t[:, None] * x1, atol=1e-14)
    assert torch.allclose(vel, x1 - x0, atol=1e-14)
    assert torch.equal(acc, torch.zeros_like(acc))


def test_mse_velocity_loss_equals_torch_mse_loss():
    x0, x1, g = torch.randn(8, 3, 2), torch.randn(8, 3, 2), torch.randn(8, 2, 3, 2)
    t, pred = torch.rand(8), torch.randn(8, 3, 2)
    (vel,) = bk.bezier(x0, x1, t, g, orders=(1,), backend="torch")
    loss = bk.bezier_distill_loss(pred, x0, x1, t, g, backend="torch")
    torch.testing.assert_close(loss, F.mse_loss(pred, vel))


def test_endpoint_and_huber_closed_forms():
    """Degree 1: the endpoint residual is (1 - t)(pred - (x1 - x0)); pseudo-Huber by hand."""
    x0, x1 = torch.randn(5, 7, dtype=torch.float64), torch.randn(5, 7, dtype=torch.float64)
    t, pred = torch.rand(5, dtype=torch.float64), torch.randn(5, 7, dtype=torch.float64)
    r = (1 - t[:, None]) * (pred - (x1 - x0))
    got = bk.bezier_distill_loss(pred, x0, x1, t, target="endpoint", reduction="none", backend="torch")
    torch.testing.assert_close(got, r.pow(2).mean(1))
    c = 0.00054 * math.sqrt(7)
    got = bk.bezier_distill_loss(pred, x0, x1, t, target="endpoint", loss="pseudo_huber", reduction="none",
                                 backend="torch")
    torch.testing.assert_close(got, torch.sqrt(r.pow(2).sum(1) + c * c) - c)
    w = torch.rand(5, dtype=torch.float64)
    got = bk.bezier_distill_loss(pred, x0, x1, t, target="endpoint", loss="pseudo_huber", huber_c=0.3, weight=w,
                                 reduction="sum", backend="torch")
    torch.testing.assert_close(got, (w * (torch.sqrt(r.pow(2).sum(1) + 0.09) - 0.3)).sum())
