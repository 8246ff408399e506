"""Public API (docs/spec.md section 2): validate once, pick a backend, run its fused op or the reference."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from . import _extension, _validate, backends, reference

# bezier_distill_loss's fast path into its backend's fused loss (None without the compiled extension)
_FUSED_LOSS_VALUE = getattr(_extension.EXTENSION, "fused_loss_value", None)


def _features_flat(x: Tensor, leading: tuple[int, ...], num_features: int) -> Tensor:
    """x [*leading, *F] as [*leading, D] with unit feature stride; a view whenever the layout allows,
    x itself (no op dispatched) when it is that already."""
    if x.dim() == len(leading) + 1 and (num_features <= 1 or x.stride(-1) == 1):
        return x
    y = x.reshape(leading + (num_features,))
    if num_features > 1 and y.stride(-1) != 1:
        y = y.contiguous()
    return y


def _fused_path(backend: str, x0: Tensor, x1: Tensor, guides: Tensor | None, t: Tensor,
                orders: tuple[int, ...], shape: _validate.PathShape) -> tuple[Tensor, ...]:
    B, D = shape.batch, shape.num_features
    g = None if guides is None else _features_flat(guides, (B, shape.degree - 1), D)
    out = backends.kernel_ops(backend).path_fwd(
        _features_flat(x0, (B,), D), _features_flat(x1, (B,), D), g, t, list(orders))
    if len(shape.features) == 1:
        return tuple(out)
    return tuple(o.view((B,) + shape.features) for o in out)


def bezier(x0: Tensor, x1: Tensor, t: Tensor, guides: Tensor | None = None, *,
           orders: Sequence[int] = (0, 1), backend: str = "auto") -> tuple[Tensor, ...]:
    """Evaluates Bezier paths from x0 through guides to x1, and their time derivatives, at t.

    x0, x1: [B, *F]; guides: None (degree 1, the straight line) or [B, n-1, *F]; t: [B], any
    floating dtype, any real value (outside [0, 1] extrapolates). orders: distinct entries of
    {0, 1, 2} for position B(t), velocity B'(t), acceleration B''(t). Returns one [B, *F] tensor
    per order, in x0's dtype. Differentiable in x0, x1, guides and t.
    """
    shape = _validate.check_path(x0, x1, t, guides)
    orders = _validate.check_orders(orders)
    name = backends.resolve_backend(backend, x0.device, shape.degree, "path", x0.dtype, x0.numel())
    if name == "torch":
        return reference.bezier(x0, x1, t, guides, orders=orders)
    return _fused_path(name, x0, x1, guides, t, orders, shape)


def bezier_stacked(P: Tensor, t: Tensor, *, orders: Sequence[int] = (0, 1),
                   backend: str = "auto") -> tuple[Tensor, ...]:
    """Like `bezier`, with the n+1 control points stacked: P [B, n+1, *F]. P is read in place (no copy)."""
    shape = _validate.check_stacked(P, t)
    orders = _validate.check_orders(orders)
    name = backends.resolve_backend(backend, P.device, shape.degree, "path", P.dtype,
                                    shape.batch * shape.num_features)
    if name == "torch":
        return reference.bezier_stacked(P, t, orders=orders)
    n = shape.degree
    return _fused_path(name, P[:, 0], P[:, n], P[:, 1:n] if n > 1 else None, t, orders, shape)


def bezier_distill_loss(pred: Tensor, x0: Tensor, x1: Tensor, t: Tensor, guides: Tensor | None = None, *,
                        target: str = "velocity", loss: str = "mse", huber_c: float | None = None,
                        weight: Tensor | None = None, reduction: str = "mean", backend: str = "auto") -> Tensor:
    """Fused Bezier distillation loss of the student's output pred [B, *F] at (B(t), t).

    target "velocity": r = pred - B'(t) (drift fitting); "endpoint": r = B(t) + (1 - t) pred - x1
    (the end state predicted from x_t). loss "mse": l_b = mean_d r^2; "pseudo_huber":
    l_b = sqrt(sum_d r^2 + c^2) - c with c = huber_c or 0.00054 sqrt(D). weight [B] scales l_b
    (and receives a gradient like any factor); reduction "mean", "sum" or "none" ([B]).
    Returns pred's dtype. Gradients flow to pred, x0, x1, guides and t. With the defaults it
    equals torch.nn.functional.mse_loss(pred, B'(t)).
    """
    shape = _validate.check_loss_call(pred, x0, x1, t, guides, target, loss, huber_c, weight, reduction)
    name = backends.resolve_backend(backend, x0.device, shape.degree, "loss", x0.dtype, x0.numel())
    if name == "torch":
        return reference.bezier_distill_loss(pred, x0, x1, t, guides, target=target, loss=loss,
                                             huber_c=huber_c, weight=weight, reduction=reduction)
    B, D = shape.batch, shape.num_features
    c = 0.0 if loss != "pseudo_huber" else reference.default_huber_c(D) if huber_c is None else float(huber_c)
    if _FUSED_LOSS_VALUE is not None and not torch.compiler.is_compiling():  # (Dynamo cannot trace into it)
        value = _FUSED_LOSS_VALUE(name, pred, x0, x1, guides, t, weight, target, loss, c, reduction)
        if value is not None:  # the tensors were flat already: the same op call as below
            return value
    g = None if guides is None else _features_flat(guides, (B, shape.degree - 1), D)
    # the kernel writes dL/dpred, unless gradients must reach the control points (then it keeps r)
    grad = torch.is_grad_enabled()
    residual = grad and (x0.requires_grad or x1.requires_grad or (guides is not None and guides.requires_grad))
    args = (_features_flat(pred, (B,), D), _features_flat(x0, (B,), D), _features_flat(x1, (B,), D), g, t, weight,
            target, loss, c, reduction, residual)
    return backends.kernel_ops(name).fused_loss(*args, grad and t.requires_grad)[0]  # in pred's dtype


def bernstein_weights(t: Tensor, n: int, order: int = 0) -> Tensor:
    """Stable float64 weights w [B, n+1] with B^(order)(t) = sum_i w[:, i] P_i (docs/spec.md section 1).

    t: [B] floating; n: degree, 1..reference.MAX_REFERENCE_DEGREE; order >= 0 (zero weights past n).
    """
    t = _validate.check_float_tensor(t, "t")
    if t.dim() != 1:
        raise ValueError(f"t must have shape [B], got {list(t.shape)}")
    if type(n) is not int or not 1 <= n <= reference.MAX_REFERENCE_DEGREE:
        raise ValueError(f"n must be an int degree in 1..{reference.MAX_REFERENCE_DEGREE}, got {n!r}")
    if type(order) is not int or order < 0:
        raise ValueError(f"order must be a non-negative int, got {order!r}")
    return reference.bernstein_weights(t, n, order)
