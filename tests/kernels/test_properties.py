"""Property tests (hypothesis) of the ops' maths and of their input checks, on the CPU backends.

Identities of Bezier curves that hold for every degree, time and control polygon: the weights of
order 0 sum to 1 and those of orders 1 and 2 to 0; reversing the polygon reverses time; degree
elevation leaves the curve unchanged. Input checks: any mismatched shape is a ValueError naming
the argument, raised before a kernel runs.
"""
from __future__ import annotations

import pytest
import torch

import bezier_kernels as bk

hypothesis = pytest.importorskip("hypothesis", reason="pip install hypothesis (the test extra)")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

CPU_BACKENDS = [name for name in ("torch", "cpp") if bk.available_backends()[name].available]
SETTINGS = settings(max_examples=25, deadline=None)

degrees = st.integers(min_value=1, max_value=bk.MAX_KERNEL_DEGREE)
times = st.lists(st.floats(min_value=-0.5, max_value=1.5, allow_nan=False), min_size=1, max_size=6)
seeds = st.integers(min_value=0, max_value=2**31 - 1)
backends = st.sampled_from(CPU_BACKENDS)


def polygon(batch: int, degree: int, features: int, seed: int) -> torch.Tensor:
    return torch.randn(batch, degree + 1, features, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@SETTINGS
@given(degree=degrees, t=times)
def test_weights_of_position_sum_to_one_and_of_derivatives_to_zero(degree, t):
    t = torch.tensor(t, dtype=torch.float64)
    for order, total in ((0, 1.0), (1, 0.0), (2, 0.0)):
        w = bk.bernstein_weights(t, degree, order=order)
        scale = w.abs().sum(1).clamp_min(1.0)
        assert torch.all((w.sum(1) - total).abs() <= 1e-12 * scale), (order, w.sum(1))


@SETTINGS
@given(degree=degrees, t=times, seed=seeds, backend=backends)
def test_reversing_the_polygon_reverses_time(degree, t, seed, backend):
    """B(t; P_0..P_n) = B(1-t; P_n..P_0), B' changes sign, B'' does not."""
    t = torch.tensor(t, dtype=torch.float64)
    P = polygon(t.shape[0], degree, 3, seed)
    forward = bk.bezier_stacked(P, t, orders=(0, 1, 2), backend=backend)
    backward = bk.bezier_stacked(P.flip(1), 1 - t, orders=(0, 1, 2), backend=backend)
    for sign, a, b in zip((1, -1, 1), forward, backward):
        assert (a - sign * b).abs().max() <= 1e-9 * (a.abs().max() + P.abs().max() * degree**2)


@SETTINGS
@given(degree=st.integers(min_value=1, max_value=bk.MAX_KERNEL_DEGREE - 1), t=times, seed=seeds, backend=backends)
def test_degree_elevation_leaves_the_curve_unchanged(degree, t, seed, backend):
    """Q_i = i/(n+1) P_{i-1} + (1 - i/(n+1)) P_i is the same curve at degree n + 1 (all orders)."""
    t = torch.tensor(t, dtype=torch.float64)
    P = polygon(t.shape[0], degree, 2, seed)
    a = torch.arange(degree + 2, dtype=torch.float64)[None, :, None] / (degree + 1)
    padded_left = torch.cat([P[:, :1], P], dim=1)      # P_{i-1}, with P_{-1} unused (a_0 = 0)
    padded_right = torch.cat([P, P[:, -1:]], dim=1)    # P_i, with P_{n+1} unused (1 - a_{n+1} = 0)
    Q = a * padded_left + (1 - a) * padded_right
    low = bk.bezier_stacked(P, t, orders=(0, 1, 2), backend=backend)
    high = bk.bezier_stacked(Q, t, orders=(0, 1, 2), backend=backend)
    for x, y in zip(low, high):
        assert (x - y).abs().max() <= 1e-9 * (x.abs().max() + P.abs().max() * (degree + 1) ** 2)


@SETTINGS
@given(batch=st.integers(1, 5), features=st.integers(1, 5), degree=st.integers(2, 6),
       wrong=st.sampled_from(["x1_batch", "x1_features", "guides_batch", "guides_features", "t_batch"]),
       backend=backends)
def test_any_mismatched_shape_is_a_value_error_naming_the_argument(batch, features, degree, wrong, backend):
    x0 = torch.zeros(batch, features)
    shapes = {"x1": (batch, features), "guides": (batch, degree - 1, features), "t": (batch,)}
    name, axis = wrong.split("_")
    shape = list(shapes[name])
    index = 0 if axis == "batch" else len(shape) - 1
    shape[index] += 1
    shapes[name] = tuple(shape)
    x1, guides, t = torch.zeros(shapes["x1"]), torch.zeros(shapes["guides"]), torch.zeros(shapes["t"])
    with pytest.raises(ValueError, match=name):
        bk.bezier(x0, x1, t, guides, orders=(0,), backend=backend)
    with pytest.raises(ValueError, match=name):
        bk.bezier_distill_loss(torch.zeros(batch, features), x0, x1, t, guides, backend=backend)
