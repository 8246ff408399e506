"""Input checks shared by every backend (docs/spec.md section 5), run before any kernel launch.

Wrong types and dtypes raise TypeError, wrong shapes, devices and names raise ValueError; every
message names the argument and what was expected. Valid calls on plain tensors take a fast path:
one call of the extension's call_shape (csrc/module.cpp) when it is built, else a few comparisons
here; anything it does not accept goes through the full checks, which raise with the messages.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import torch
from torch import Tensor

from . import _extension
from .reference import MAX_REFERENCE_DEGREE

_CALL_SHAPE = getattr(_extension.EXTENSION, "call_shape", None)  # None without the compiled extension

ORDERS = (0, 1, 2)
TARGETS = ("velocity", "endpoint")
LOSSES = ("mse", "pseudo_huber")
REDUCTIONS = ("mean", "sum", "none")


class PathShape(NamedTuple):
    """Batch size B, feature shape F (D = prod(F) features) and degree n of a batch of paths.
    (A NamedTuple: built on every call, it must cost next to nothing.)"""

    batch: int
    features: tuple[int, ...]
    degree: int

    @property
    def num_features(self) -> int:
        return math.prod(self.features)


def check_float_tensor(x: object, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype (float16, bfloat16, float32, float64), got {x.dtype}")
    return x


def _check_like(x: Tensor, ref: Tensor, name: str, ref_name: str, shape: tuple[int, ...], shape_text: str) -> None:
    if x.device != ref.device:
        raise ValueError(f"{name} must be on {ref_name}'s device {ref.device}, got {x.device}")
    if x.dtype != ref.dtype:
        raise TypeError(f"{name} must have {ref_name}'s dtype {ref.dtype}, got {x.dtype}")
    if tuple(x.shape) != shape:
        raise ValueError(f"{name} must have shape {shape_text} = {list(shape)}, got {list(x.shape)}")


def check_time(t: object, batch: int, device: torch.device) -> Tensor:
    t = check_float_tensor(t, "t")
    if t.device != device:
        raise ValueError(f"t must be on the control points' device {device}, got {t.device}")
    if tuple(t.shape) != (batch,):
        raise ValueError(f"t must have shape [B] = [{batch}], got {list(t.shape)}")
    return t


def _check_degree(degree: int, name: str) -> int:
    if degree > MAX_REFERENCE_DEGREE:
        raise ValueError(f"{name} gives degree {degree}; degrees 1..{MAX_REFERENCE_DEGREE} are supported")
    return degree


def check_path(x0: object, x1: object, t: object, guides: object | None) -> PathShape:
    """Validates bezier(x0, x1, t, guides): x0, x1 [B, *F]; guides None or [B, n-1, *F]; t [B].

    Valid plain tensors take a short path (the extension's call_shape, else one comparison per property:
    microseconds less per call); anything else, and every error, goes through the full checks with their
    messages."""
    if _CALL_SHAPE is not None and not torch.compiler.is_compiling():  # (Dynamo cannot trace into the extension)
        found = _CALL_SHAPE(x0, x1, t, guides, None, None, MAX_REFERENCE_DEGREE)
        if found is not None:
            return PathShape(*found)
    if type(x0) is Tensor and type(x1) is Tensor and type(t) is Tensor:
        shape, dtype, device = x0.shape, x0.dtype, x0.device
        if (dtype.is_floating_point and len(shape) >= 1 and x1.dtype is dtype and x1.shape == shape
                and t.dtype.is_floating_point and t.dim() == 1 and t.shape[0] == shape[0] and x1.device == device
                and t.device == device):
            if guides is None:
                return PathShape(shape[0], tuple(shape[1:]), 1)
            if type(guides) is Tensor:
                gs = guides.shape
                if (guides.dtype is dtype and len(gs) == len(shape) + 1 and gs[0] == shape[0] and gs[2:] == shape[1:]
                        and gs[1] < MAX_REFERENCE_DEGREE and guides.device == device):
                    return PathShape(shape[0], tuple(shape[1:]), gs[1] + 1)
    return _check_path(x0, x1, t, guides)


def _check_path(x0: object, x1: object, t: object, guides: object | None) -> PathShape:
    x0 = check_float_tensor(x0, "x0")
    x1 = check_float_tensor(x1, "x1")
    if x0.dim() < 1:
        raise ValueError(f"x0 must have shape [B, *F] with a batch dimension, got a {x0.dim()}-d tensor")
    _check_like(x1, x0, "x1", "x0", tuple(x0.shape), "[B, *F] like x0")
    batch, features = x0.shape[0], tuple(x0.shape[1:])
    degree = 1
    if guides is not None:
        guides = check_float_tensor(guides, "guides")
        if guides.dim() != x0.dim() + 1:
            raise ValueError(f"guides must have shape [B, n-1, *F] = [{batch}, n-1, {', '.join(map(str, features))}], "
                             f"got {list(guides.shape)}")
        expected = (batch, guides.shape[1]) + features
        _check_like(guides, x0, "guides", "x0", expected, "[B, n-1, *F]")
        degree = guides.shape[1] + 1
    check_time(t, batch, x0.device)
    return PathShape(batch, features, _check_degree(degree, "guides"))


def check_stacked(P: object, t: object) -> PathShape:
    """Validates bezier_stacked(P, t): P [B, n+1, *F] with n >= 1; t [B]."""
    P = check_float_tensor(P, "P")
    if P.dim() < 2 or P.shape[1] < 2:
        raise ValueError(f"P must have shape [B, n+1, *F] with n >= 1 (at least 2 control points), got {list(P.shape)}")
    check_time(t, P.shape[0], P.device)
    return PathShape(P.shape[0], tuple(P.shape[2:]), _check_degree(P.shape[1] - 1, "P"))


def check_orders(orders: object) -> tuple[int, ...]:
    """orders: a non-empty sequence of distinct entries of (0, 1, 2)."""
    if isinstance(orders, (str, bytes)) or not isinstance(orders, Sequence):
        raise TypeError(f"orders must be a sequence of distinct entries of {ORDERS}, got {orders!r}")
    out = tuple(orders)
    if not out or any(type(k) is not int or k not in ORDERS for k in out) or len(set(out)) != len(out):
        raise ValueError(f"orders must be a non-empty sequence of distinct entries of {ORDERS}, got {orders!r}")
    return out


def _check_choice(value: object, name: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def check_loss(pred: object, x0: Tensor, shape: PathShape, target: object, loss: object,
               huber_c: object, weight: object | None, reduction: object) -> None:
    """Validates the loss-only arguments of bezier_distill_loss (the path is checked already)."""
    pred = check_float_tensor(pred, "pred")
    _check_like(pred, x0, "pred", "x0", tuple(x0.shape), "[B, *F] like x0")
    _check_choice(target, "target", TARGETS)
    _check_choice(loss, "loss", LOSSES)
    _check_choice(reduction, "reduction", REDUCTIONS)
    if huber_c is not None:
        if loss != "pseudo_huber":
            raise ValueError(f"huber_c is only used with loss='pseudo_huber', got loss={loss!r}")
        if isinstance(huber_c, bool) or not isinstance(huber_c, (int, float)) or not huber_c > 0:
            raise ValueError(f"huber_c must be a positive number, got {huber_c!r}")
    if weight is not None:
        weight = check_float_tensor(weight, "weight")
        if weight.device != x0.device:
            raise ValueError(f"weight must be on x0's device {x0.device}, got {weight.device}")
        if tuple(weight.shape) != (shape.batch,):
            raise ValueError(f"weight must have shape [B] = [{shape.batch}], got {list(weight.shape)}")


def check_loss_call(pred: object, x0: object, x1: object, t: object, guides: object | None, target: object,
                    loss: object, huber_c: object, weight: object | None, reduction: object) -> PathShape:
    """Validates a whole bezier_distill_loss call (check_path, then check_loss); the path's shape."""
    if _CALL_SHAPE is not None and not torch.compiler.is_compiling() and target in TARGETS and loss in LOSSES and (
            reduction in REDUCTIONS and (huber_c is None or (loss == "pseudo_huber" and type(huber_c) in (int, float)
                                                             and huber_c > 0))):
        found = _CALL_SHAPE(x0, x1, t, guides, pred, weight, MAX_REFERENCE_DEGREE)
        if found is not None:
            return PathShape(*found)
    shape = check_path(x0, x1, t, guides)
    check_loss(pred, x0, shape, target, loss, huber_c, weight, reduction)
    return shape
