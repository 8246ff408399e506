"""Custom ops of the fused backends: fake kernels, autograd, and the "cpp"/"cuda" registration.

Every fused backend provides four kernel ops with the schemas defined in csrc/bezier_ops.cpp
(features flattened by the caller, unit feature stride):

    path_fwd(x0 [B,D], x1 [B,D], guides [B,n-1,D]?, t [B], orders) -> [out [B,D] per order]
    path_bwd(grads [[B,D] per order], x0, x1, guides?, t, orders, points_grad, t_grad)
        -> (grad_x0 [B,D], grad_x1 [B,D], grad_guides [B,n-1,D], grad_t [B])  (shape [0] when not asked)
    loss_fwd(pred [B,D], x0, x1, guides?, t, row_weight [B], out_scale [B]?, target, loss, huber_c)
        -> (loss [B], out [B,D], scale [B], dloss_dt [B])
    fused_loss(pred, x0, x1, guides?, t, weight?, target, loss, huber_c, reduction, residual, t_grad)
        -> (value [] or [B] in pred's dtype, out [B,D], weight_grad [B], scale [B], dt [B] or [0])

loss_fwd (forward only) reads the control points and pred once, computes the residual r (velocity:
pred - B'(t); endpoint: B(t) + (1-t) pred - x1) and writes out_scale_b * r; per sample it gives the
unweighted loss l_b and, for the reduced loss L = sum_b m_b l_b (m = row_weight, float64), scale_b
with dL/dr_bd = scale_b r_bd and dloss_dt_b = dL/dt_b. Per-sample outputs are float32 (float64 for
float64).

fused_loss is the whole loss, the one bezier_distill_loss calls: m_b (the weight, over B for a
mean), the factors and the reduction are computed in the kernels, and out is dL/dpred for a unit
upstream gradient (or r, when x0, x1 or guides need gradients: residual=True), so the backward is
`out` itself when the upstream gradient is 1 (eager CPU), else one multiplication. Its autograd is
C++ for "cpp" and "cuda" (csrc/bezier_autograd.cpp) and Python here for "triton"
(`_make_fused_loss_autograd`, the same maths). `register_kernel_ops` attaches the shared fake
kernels, and (autograd=True) the Python autograd of path_fwd and fused_loss, to a backend's ops.
"""
from __future__ import annotations

import torch
from torch import Tensor

from . import _extension, backends
from .reference import compute_dtype


def _degree(guides: Tensor | None) -> int:
    return 1 if guides is None else guides.shape[1] + 1


def _guides_grad(gguides: Tensor, guides: Tensor) -> Tensor:
    """path_bwd's guides gradient in the guides' shape ([B, 0, D] zeros for given empty guides)."""
    return gguides if gguides.shape == guides.shape else torch.zeros_like(guides)


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
                _guides_grad(gguides, guides) if guides is not None and need[2] else None,
                gt if need[3] else None, None)

    return setup_context, backward


# ----------------------------------------------------------------------------- the fused loss's autograd
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


def _make_fused_loss_autograd(path_bwd):
    """setup_context and backward of a Python-registered fused_loss (the triton backend's; the
    compiled backends' is C++, csrc/bezier_autograd.cpp, with the same maths)."""

    def setup_context(ctx, inputs, output):
        pred, x0, x1, guides, t, weight, target, loss, huber_c, reduction, residual, t_grad = inputs
        _, out, weight_grad, scale, dt = output
        ctx.mark_non_differentiable(out, weight_grad, scale, dt)
        ctx.set_materialize_grads(False)
        # what the backward reads: the control points and scale only with residual, t for its dtype
        ctx.save_for_backward(*(x if residual else None for x in (x0, x1, guides)),
                              t if residual or t_grad else None, weight, out, weight_grad,
                              scale if residual else None, dt if t_grad else None)
        ctx.velocity, ctx.rowwise, ctx.residual = target == "velocity", reduction == "none", residual

    def backward(ctx, grad, *_unused):
        grads = [None] * 12
        if grad is None:
            return tuple(grads)
        x0, x1, guides, t, weight, out, weight_grad, scale, dt = ctx.saved_tensors
        need = ctx.needs_input_grad
        if need[4]:
            if dt is None:
                raise RuntimeError("bezier_kernels fused_loss: a gradient for t needs t_grad=True")
            grads[4] = (grad * dt).to(t.dtype)  # grad: [] (mean, sum) or [B] (none), by broadcasting
        if need[5] and weight is not None:
            grads[5] = (grad * weight_grad).to(weight.dtype)
        if not ctx.residual:
            if need[1] or need[2] or need[3]:
                raise RuntimeError("bezier_kernels fused_loss: gradients for x0, x1 or guides need residual=True")
            if need[0]:
                grads[0] = _times_upstream(out, grad, ctx.rowwise)
            return tuple(grads)
        sample = grad.to(scale.dtype) * scale  # dL/dr_bd = sample_b r_bd
        if need[0]:
            factor = sample if ctx.velocity else sample * (1 - t.to(scale.dtype))
            grads[0] = (out * factor.unsqueeze(1)).to(out.dtype)
        if need[1] or need[2] or need[3]:
            # dr/dP_i = -w_1[i] (velocity) or w_0[i] - [i == n] (endpoint): path_bwd of order 1 or 0
            sr = (out * sample.unsqueeze(1)).to(out.dtype)
            gx0, gx1, gguides, _ = path_bwd([-sr if ctx.velocity else sr], x0, x1, guides, t,
                                            [1 if ctx.velocity else 0], True, False)
            grads[1] = gx0 if need[1] else None
            grads[2] = (gx1 if ctx.velocity else gx1 - sr) if need[2] else None
            grads[3] = _guides_grad(gguides, guides) if need[3] and guides is not None else None
        return tuple(grads)

    return setup_context, backward


def register_kernel_ops(name: str, ops: backends.KernelOps, devices: tuple[str, ...], reason: str, *,
                        autograd: bool = True) -> None:
    """Attaches the shared fake kernels, and (autograd) the Python autograd of path_fwd and fused_loss,
    to a backend's ops and registers the backend. (loss_fwd is forward-only: fused_loss is the loss
    with autograd.)"""
    torch.library.register_fake(ops.path_fwd, _path_fwd_fake)
    torch.library.register_fake(ops.path_bwd, _path_bwd_fake)
    torch.library.register_fake(ops.loss_fwd, _loss_fwd_fake)
    torch.library.register_fake(ops.fused_loss, _fused_loss_fake)
    if autograd:
        setup_context, backward = _make_path_autograd(ops.path_bwd)
        torch.library.register_autograd(ops.path_fwd, backward, setup_context=setup_context)
        setup_context, backward = _make_fused_loss_autograd(ops.path_bwd)
        torch.library.register_autograd(ops.fused_loss, backward, setup_context=setup_context)
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
