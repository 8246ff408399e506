"""Custom ops of the fused backends: fake kernels, autograd, the fused loss, and "cpp"/"cuda".

Every fused backend provides three kernel ops with the schemas defined in csrc/bezier_ops.cpp
(features flattened by the caller, unit feature stride):

    path_fwd(x0 [B,D], x1 [B,D], guides [B,n-1,D]?, t [B], orders) -> [out [B,D] per order]
    path_bwd(grads [[B,D] per order], x0, x1, guides?, t, orders, points_grad, t_grad)
        -> (grad_x0 [B,D], grad_x1 [B,D], grad_guides [B,n-1,D], grad_t [B])  (shape [0] when not asked)
    loss_fwd(pred [B,D], x0, x1, guides?, t, row_weight [B], out_scale [B]?, target, loss, huber_c)
        -> (loss [B], out [B,D], scale [B], dloss_dt [B])

loss_fwd reads the control points and pred once, computes the residual r (velocity: pred - B'(t);
endpoint: B(t) + (1-t) pred - x1) and writes out_scale_b * r; per sample it gives the unweighted
loss l_b and, for the reduced loss L = sum_b m_b l_b (m = row_weight, float64), scale_b with
dL/dr_bd = scale_b r_bd and dloss_dt_b = dL/dt_b. Per-sample outputs are float32 (float64 for
float64). `register_kernel_ops` attaches the shared fake kernels, and (autograd=True) the path
autograd in Python, to any backend's ops.

The compiled backends ("cpp", "cuda") have their autograd in C++ (csrc/bezier_autograd.cpp) and the
whole loss as one op, bezier_kernels::fused_loss (KernelOps.fused_loss; fake kernel here):

    fused_loss(pred, x0, x1, guides?, t, weight?, target, loss, huber_c, reduction, residual, t_grad)
        -> (value [] or [B] in pred's dtype, out [B,D], weight_grad [B], scale [B], dt [B] or [0])

with the row weights, factors and the reduction computed inside the kernel; its backward returns
`out` itself as dL/dpred when the upstream gradient is 1 (eager CPU), else one multiplication.

For Triton the loss is the composite custom op bezier_kernels::distill_loss:
it picks m_b from the weights and the reduction, has the kernel write dL/dpred directly (mse, one
pass; pseudo-Huber, whose scale needs the whole row first, adds one in-place row scale) and reduces.
Its backward is then a multiplication by the upstream gradient, skipped when that is 1 (checked on
CPU tensors in eager mode) and done in place otherwise: the loss holds at most one [B, D] tensor, the
gradient itself. When x0, x1 or guides need gradients (residual=True) it keeps r instead.
"""
from __future__ import annotations

import torch
from torch import Tensor

from . import _extension, backends, reference
from .reference import bernstein_weights, compute_dtype


def _degree(guides: Tensor | None) -> int:
    return 1 if guides is None else guides.shape[1] + 1


# ----------------------------------------------------------------------------- fake kernels
def _path_fwd_fake(x0, x1, guides, t, orders):
    return [x0.new_empty(x0.shape) for _ in orders]


def _path_bwd_fake(grads, x0, x1, guides, t, orders, points_grad, t_grad):
    B, D = x0.shape
    n = _degree(guides)
    points_shape = (B, D) if points_grad else (0,)
    guides_shape = (B, n - 1, D) if points_grad and n > 1 else (0,)
    return (x0.new_empty(points_shape), x0.new_empty(points_shape), x0.new_empty(guides_shape),
            t.new_empty((B if t_grad else 0,)))


def _loss_fwd_fake(pred, x0, x1, guides, t, row_weight, out_scale, target, loss, huber_c):
    B = x0.shape[0]
    acc = compute_dtype(x0.dtype)
    return (x0.new_empty((B,), dtype=acc), x0.new_empty(x0.shape), x0.new_empty((B,), dtype=acc),
            x0.new_empty((B,), dtype=acc))


def _fused_loss_fake(pred, x0, x1, guides, t, weight, target, loss, huber_c, reduction, residual, t_grad):
    B = pred.shape[0]
    acc = compute_dtype(pred.dtype)
    return (pred.new_empty((B,) if reduction == "none" else ()), pred.new_empty(pred.shape),
            pred.new_empty((B,), dtype=acc), pred.new_empty((B,), dtype=acc),
            pred.new_empty((B if t_grad else 0,), dtype=acc))


# ----------------------------------------------------------------------------- autograd
def _make_path_autograd(path_bwd):
    def setup_context(ctx, inputs, output):
        x0, x1, guides, t, orders = inputs
        ctx.save_for_backward(x0, x1, guides, t)
        ctx.orders = orders
        ctx.set_materialize_grads(False)  # outputs nobody used get None: their order is skipped

    def backward(ctx, grads):
        x0, x1, guides, t = ctx.saved_tensors
        used = [(k, g) for k, g in zip(ctx.orders, grads) if g is not None]
        need = ctx.needs_input_grad
        if not used:
            return None, None, None, None, None
        points_grad = need[0] or need[1] or (guides is not None and need[2])
        gx0, gx1, gguides, gt = path_bwd([g for _, g in used], x0, x1, guides, t, [k for k, _ in used],
                                         points_grad, need[3])
        return (gx0 if need[0] else None, gx1 if need[1] else None,
                gguides if guides is not None and need[2] else None, gt if need[3] else None, None)

    return setup_context, backward


# ----------------------------------------------------------------------------- the fused loss
def _pred_factor(t: Tensor, target: str) -> Tensor:
    """dr/dpred per sample, float64 [B]: 1 (velocity) or 1 - t (endpoint)."""
    t64 = t.to(torch.float64)
    return torch.ones_like(t64) if target == "velocity" else 1.0 - t64


def _row_weight(weight: Tensor | None, batch: int, reduction: str, device: torch.device) -> Tensor:
    """m_b, float64 [B]: sample b's factor in the reduced loss (its weight, over B for a mean)."""
    factor = 1.0 / batch if reduction == "mean" and batch > 0 else 1.0
    if weight is None:
        return torch.full((batch,), factor, dtype=torch.float64, device=device)
    return weight.to(torch.float64) * factor


@torch.library.custom_op("bezier_kernels::distill_loss", mutates_args=())
def distill_loss(pred: Tensor, x0: Tensor, x1: Tensor, guides: Tensor | None, t: Tensor, weight: Tensor | None,
                 target: str, loss: str, huber_c: float, reduction: str, residual: bool,
                 backend: str) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The fused distillation loss on `backend`'s kernels; inputs flattened and validated by the caller.

    Returns (loss, out, per_sample, scale, dloss_dt): loss [] ("mean", "sum") or [B] ("none") in the
    accumulation dtype; out [B, D]: dL/dpred for a unit upstream gradient, or r when residual;
    per_sample [B]: the unweighted l_b; scale, dloss_dt [B]: see the module docstring.
    """
    B, D = pred.shape
    row_weight = _row_weight(weight, B, reduction, pred.device)
    pred_factor = _pred_factor(t, target)
    write_gradient = not residual and loss == "mse"  # mse: dL/dr = m_b (2 / D) r is known before the pass
    out_scale = row_weight * pred_factor * (2.0 / D) if write_gradient and D > 0 else None
    per_sample, out, scale, dloss_dt = backends.kernel_ops(backend).loss_fwd(
        pred, x0, x1, guides, t, row_weight, out_scale, target, loss, huber_c)
    if not residual and loss == "pseudo_huber":  # the row factor in out's dtype: no promoted temporary
        out.mul_((scale.to(torch.float64) * pred_factor).to(out.dtype).unsqueeze(1))
    value = reference.reduce_loss(per_sample, weight, reduction)
    return value, out, per_sample.clone() if value is per_sample else per_sample, scale, dloss_dt


@distill_loss.register_fake
def _distill_loss_fake(pred, x0, x1, guides, t, weight, target, loss, huber_c, reduction, residual, backend):
    B = pred.shape[0]
    acc = compute_dtype(pred.dtype)
    return (pred.new_empty((B,) if reduction == "none" else (), dtype=acc), pred.new_empty(pred.shape),
            *(pred.new_empty((B,), dtype=acc) for _ in range(3)))


def _plain_eager(*tensors: Tensor) -> bool:
    """True outside torch.compile, fake/functional tracing, dispatch modes and functorch transforms."""
    return (not torch.compiler.is_compiling() and torch._C._len_torch_dispatch_stack() == 0
            and not torch._C._are_functorch_transforms_active() and all(type(x) is Tensor for x in tensors))


def _times_upstream(buf: Tensor, grad: Tensor, rowwise: bool) -> Tensor:
    """buf * grad (grad [] or, rowwise, [B]): buf itself when grad is all ones (checked for CPU
    tensors in eager mode, where it costs no device sync), in place in eager mode, else a new tensor."""
    factor = grad.to(buf.dtype).unsqueeze(1) if rowwise else grad
    if not _plain_eager(buf, grad):
        return (buf * factor).to(buf.dtype)
    if buf.device.type == "cpu" and bool((grad == 1).all()):
        return buf
    return buf.mul_(factor)


def _distill_loss_setup_context(ctx, inputs, output):
    pred, x0, x1, guides, t, weight, target, loss, huber_c, reduction, residual, backend = inputs
    _, out, per_sample, scale, dloss_dt = output
    ctx.mark_non_differentiable(out, per_sample, scale, dloss_dt)
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(guides, t, weight, out, per_sample, scale, dloss_dt)
    ctx.target, ctx.reduction, ctx.residual = target, reduction, residual


def _distill_loss_backward(ctx, grad_loss, *_unused):
    grads = [None] * 12
    if grad_loss is None:
        return tuple(grads)
    guides, t, weight, out, per_sample, scale, dloss_dt = ctx.saved_tensors
    need = ctx.needs_input_grad
    B = out.shape[0]
    rowwise = ctx.reduction == "none"
    upstream = grad_loss if rowwise else grad_loss.expand(B)  # dL_total / dL per sample's term
    if need[4]:
        grads[4] = (upstream * dloss_dt).to(t.dtype)
    if need[5]:
        factor = 1.0 / B if ctx.reduction == "mean" else 1.0
        grads[5] = (upstream * per_sample * factor).to(weight.dtype)
    if not ctx.residual:
        if need[1] or need[2] or need[3]:
            raise RuntimeError("bezier_kernels::distill_loss: gradients for x0, x1 or guides need residual=True")
        if need[0]:
            grads[0] = _times_upstream(out, grad_loss, rowwise)
        return tuple(grads)
    s = upstream * scale  # dL/dr_bd = s_b r_bd
    if need[0]:
        grads[0] = (out * (s * _pred_factor(t, ctx.target).to(s.dtype)).unsqueeze(1)).to(out.dtype)
    if need[1] or need[2] or need[3]:
        # dr/dP_i = -w_1[i] (velocity) or w_0[i] - [i == n] (endpoint)
        n = _degree(guides)
        if ctx.target == "velocity":
            coef = -bernstein_weights(t, n, 1)
        else:
            coef = bernstein_weights(t, n, 0)
            coef[:, n] -= 1.0
        coef = coef.to(s.dtype) * s.unsqueeze(1)  # [B, n+1]
        if need[1]:
            grads[1] = (coef[:, :1] * out).to(out.dtype)
        if need[2]:
            grads[2] = (coef[:, n:] * out).to(out.dtype)
        if need[3] and guides is not None:
            grads[3] = (coef[:, 1:n].unsqueeze(2) * out.unsqueeze(1)).to(out.dtype)
    return tuple(grads)


distill_loss.register_autograd(_distill_loss_backward, setup_context=_distill_loss_setup_context)


def register_kernel_ops(name: str, ops: backends.KernelOps, devices: tuple[str, ...], reason: str, *,
                        autograd: bool = True) -> None:
    """Attaches the shared fake kernels, and (autograd) the path autograd, to a backend's ops and
    registers the backend. (loss_fwd is forward-only: distill_loss carries that loss's autograd.)"""
    torch.library.register_fake(ops.path_fwd, _path_fwd_fake)
    torch.library.register_fake(ops.path_bwd, _path_bwd_fake)
    torch.library.register_fake(ops.loss_fwd, _loss_fwd_fake)
    if autograd:
        setup_context, backward = _make_path_autograd(ops.path_bwd)
        torch.library.register_autograd(ops.path_fwd, backward, setup_context=setup_context)
    backends.register_backend(name, ops, devices, reason)


# ----------------------------------------------------------------------------- the extension
def _register_compiled() -> None:
    """The "cpp" and "cuda" backends: the ops of csrc/ (autograd in C++), fake kernels from here."""
    info = _extension.BUILD_INFO
    if _extension.EXTENSION is None:
        backends.register_backend("cpp", None, (), _extension.ERROR)
        backends.register_backend("cuda", None, (), _extension.ERROR)
        return
    lib = torch.ops.bezier_kernels
    compiled = backends.KernelOps(lib.path_fwd.default, lib.path_bwd.default, lib.loss_fwd.default,
                                  lib.fused_loss.default)
    torch.library.register_fake(compiled.fused_loss, _fused_loss_fake)
    threads = "OpenMP" if info["openmp"] else "single-threaded build (no OpenMP)"
    register_kernel_ops("cpp", compiled, ("cpu",), f"C++ CPU kernels, {threads}", autograd=False)
    if not info["cuda"]:
        if torch.version.cuda is None:
            cuda_reason = (f"this torch ({torch.__version__}) has no CUDA support, so the extension was "
                           "built without its CUDA kernels")
        else:
            cuda_reason = ("the extension was built without its CUDA kernels (nvcc not found, or "
                           "BEZIER_KERNELS_NO_CUDA=1, at build time); rebuild with CUDA_HOME set: "
                           "pip install --no-build-isolation -e .")
        cuda_devices: tuple[str, ...] = ()
    elif not torch.cuda.is_available():
        cuda_reason, cuda_devices = "CUDA kernels built, but no CUDA device is visible", ()
    else:
        cuda_reason, cuda_devices = "CUDA kernels of the extension", ("cuda",)
    backends.register_backend("cuda", compiled, cuda_devices, cuda_reason)


BUILD_INFO = _extension.BUILD_INFO
_register_compiled()
