"""Pure-PyTorch ground truth of docs/spec.md sections 1-2 ("torch" backend), on any device.

Written the textbook way a flow-matching codebase would: Bernstein weights per order times the
control points, differences of control points for derivatives, then the loss formula. Half
precision inputs compute in float32; float64 inputs in float64. Autograd comes from PyTorch.
Inputs are not validated here: the public functions in ``bezier_kernels`` do that.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

# C(n, n/2) overflows float64 past n = 1029; the basis is exact-rounded up to this degree.
MAX_REFERENCE_DEGREE = 1000


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; every other floating dtype computes in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def default_huber_c(num_features: int) -> float:
    """Pseudo-Huber constant c = 0.00054 * sqrt(D) (docs/spec.md section 2)."""
    return 0.00054 * math.sqrt(num_features)


def bernstein_basis(t: Tensor, n: int) -> Tensor:
    """b_{i,n}(t) = C(n,i) t^i (1-t)^(n-i) for i = 0..n, as float64 [B, n+1]; t is [B]."""
    t64 = t.to(torch.float64).unsqueeze(-1)
    i = torch.arange(n + 1, dtype=torch.float64, device=t.device)
    binom = torch.tensor([float(math.comb(n, j)) for j in range(n + 1)], dtype=torch.float64, device=t.device)
    return binom * t64.pow(i) * (1.0 - t64).pow(n - i)


def bernstein_weights(t: Tensor, n: int, order: int = 0) -> Tensor:
    """Weights w [B, n+1] (float64) with B^(order)(t) = sum_i w[:, i] P_i for a degree-n curve.

    Order k is the k-th difference of the degree n-k basis times n!/(n-k)!; zero when k > n.
    Differentiable in t.
    """
    m = n - order
    if m < 0:
        return torch.zeros(t.shape[0], n + 1, dtype=torch.float64, device=t.device)
    w = bernstein_basis(t, m)
    for _ in range(order):
        w = F.pad(w, (1, 0)) - F.pad(w, (0, 1))
    return w * float(math.perm(n, order))


def _combine(weights: Tensor, points: Tensor) -> Tensor:
    """sum_i weights[b, i] * points[b, i, ...] -> [B, *F]."""
    w = weights.to(points.dtype).reshape(weights.shape + (1,) * (points.dim() - 2))
    return (w * points).sum(dim=1)


def _evaluate(points: Tensor, t: Tensor, orders: Sequence[int]) -> list[Tensor]:
    """Orders of the path through points [B, n+1, *F], in points' dtype."""
    n = points.shape[1] - 1
    outputs = []
    for k in orders:
        diffs = points
        for _ in range(k):
            diffs = diffs[:, 1:] - diffs[:, :-1]
        if diffs.shape[1] == 0:  # k > n: the derivative vanishes
            outputs.append(torch.zeros_like(points[:, 0]))
            continue
        outputs.append(float(math.perm(n, k)) * _combine(bernstein_basis(t, n - k), diffs))
    return outputs


def stack_points(x0: Tensor, x1: Tensor, guides: Tensor | None) -> Tensor:
    """Control points [B, n+1, *F] = (x0, guides..., x1)."""
    inner = [] if guides is None else [guides]
    return torch.cat([x0.unsqueeze(1), *inner, x1.unsqueeze(1)], dim=1)


def bezier_stacked(P: Tensor, t: Tensor, *, orders: Sequence[int] = (0, 1)) -> tuple[Tensor, ...]:
    """Position, velocity, acceleration (the requested orders) of paths P [B, n+1, *F] at t [B]."""
    outputs = _evaluate(P.to(compute_dtype(P.dtype)), t, orders)
    return tuple(o.to(P.dtype) for o in outputs)


def bezier(x0: Tensor, x1: Tensor, t: Tensor, guides: Tensor | None = None, *,
           orders: Sequence[int] = (0, 1)) -> tuple[Tensor, ...]:
    """Orders of the Bezier path x0 -> guides -> x1 at t; each output is [B, *F] in x0's dtype."""
    return bezier_stacked(stack_points(x0, x1, guides), t, orders=orders)


def reduce_loss(per_sample: Tensor, weight: Tensor | None, reduction: str) -> Tensor:
    """Applies per-sample weights, then "mean", "sum" or "none" over the batch."""
    if weight is not None:
        per_sample = per_sample * weight.to(per_sample.dtype)
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    return per_sample


def bezier_distill_loss(pred: Tensor, x0: Tensor, x1: Tensor, t: Tensor, guides: Tensor | None = None, *,
                        target: str = "velocity", loss: str = "mse", huber_c: float | None = None,
                        weight: Tensor | None = None, reduction: str = "mean") -> Tensor:
    """Bezier distillation loss (docs/spec.md section 2) in pred's dtype; [B] when reduction="none"."""
    dtype = compute_dtype(pred.dtype)
    points = stack_points(x0, x1, guides).to(dtype)
    p = pred.to(dtype)
    if target == "velocity":
        (velocity,) = _evaluate(points, t, (1,))
        r = p - velocity
    else:
        (position,) = _evaluate(points, t, (0,))
        tt = t.to(dtype).reshape((-1,) + (1,) * (pred.dim() - 1))
        r = position + (1.0 - tt) * p - points[:, -1]
    r = r.flatten(1)
    if loss == "mse":
        per_sample = r.pow(2).mean(dim=1)
    else:
        c = default_huber_c(r.shape[1]) if huber_c is None else float(huber_c)
        per_sample = torch.sqrt(r.pow(2).sum(dim=1) + c * c) - c
    return reduce_loss(per_sample, weight, reduction).to(pred.dtype)
