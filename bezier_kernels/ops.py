"""Custom ops of the fused backends: fake kernels, autograd, and the "cpp"/"cuda" registration.

Every fused backend provides three ops with the schemas defined in csrc/bezier_ops.cpp (features
flattened by the caller, unit feature stride):

    path_fwd(x0 [B,D], x1 [B,D], guides [B,n-1,D]?, t [B], orders) -> [out [B,D] per order]
    path_bwd(grads [[B,D] per order], x0, x1, guides?, t, orders, points_grad, t_grad)
        -> (grad_x0 [B,D], grad_x1 [B,D], grad_guides [B,n-1,D], grad_t [B])  (shape [0] when not asked)
    loss_fwd(pred [B,D], x0, x1, guides?, t, target, loss, huber_c)
        -> (loss [B], resid [B,D], scale [B], dloss_dt [B])

loss_fwd reads the control points once and writes the residual r (velocity: pred - B'(t);
endpoint: B(t) + (1-t) pred - x1) together with per-sample sums, so the backward is a per-sample
scale of r: dl_b/dr_bd = scale_b * r_bd. Per-sample outputs are float32 (float64 for float64).
`register_kernel_ops` attaches the same fake kernels and autograd to any backend's ops.
"""
from __future__ import annotations

import torch
from torch import Tensor

from . import backends
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


def _loss_fwd_fake(pred, x0, x1, guides, t, target, loss, huber_c):
    B = x0.shape[0]
    acc = compute_dtype(x0.dtype)
    return (x0.new_empty((B,), dtype=acc), x0.new_empty(x0.shape), x0.new_empty((B,), dtype=acc),
            x0.new_empty((B,), dtype=acc))


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


def _loss_setup_context(ctx, inputs, output):
    pred, x0, x1, guides, t, target, loss, huber_c = inputs
    _, resid, scale, dloss_dt = output
    ctx.mark_non_differentiable(resid, scale, dloss_dt)
    ctx.set_materialize_grads(False)  # no zero [B, D] gradients for the non-differentiable outputs
    ctx.save_for_backward(guides, t, resid, scale, dloss_dt)
    ctx.target = target


def _loss_backward(ctx, grad_loss, _grad_resid, _grad_scale, _grad_dt):
    guides, t, resid, scale, dloss_dt = ctx.saved_tensors
    need = ctx.needs_input_grad
    if grad_loss is None:
        return (None,) * 8
    dtype = resid.dtype
    s = grad_loss * scale  # dl/dr_bd = s_b r_bd
    grads = [None] * 8
    if need[0]:
        s_pred = s * (1.0 - t.to(s.dtype)) if ctx.target == "endpoint" else s
        grads[0] = (resid * s_pred.unsqueeze(1)).to(dtype)
    if need[4]:
        grads[4] = (grad_loss * dloss_dt).to(t.dtype)
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
            grads[1] = (coef[:, :1] * resid).to(dtype)
        if need[2]:
            grads[2] = (coef[:, n:] * resid).to(dtype)
        if need[3] and guides is not None:
            grads[3] = (coef[:, 1:n].unsqueeze(2) * resid.unsqueeze(1)).to(dtype)
    return tuple(grads)


def register_kernel_ops(name: str, ops: backends.KernelOps, devices: tuple[str, ...], reason: str) -> None:
    """Attaches the shared fake kernels and autograd to a backend's ops and registers the backend."""
    torch.library.register_fake(ops.path_fwd, _path_fwd_fake)
    torch.library.register_fake(ops.path_bwd, _path_bwd_fake)
    torch.library.register_fake(ops.loss_fwd, _loss_fwd_fake)
    setup_context, backward = _make_path_autograd(ops.path_bwd)
    torch.library.register_autograd(ops.path_fwd, backward, setup_context=setup_context)
    torch.library.register_autograd(ops.loss_fwd, _loss_backward, setup_context=_loss_setup_context)
    backends.register_backend(name, ops, devices, reason)


# ----------------------------------------------------------------------------- the extension
def _load_extension():
    try:
        from . import _C
    except ImportError as error:
        return None, (f"the C++ extension bezier_kernels._C is not built or failed to load ({error}); "
                      "build it with: pip install --no-build-isolation -e .")
    return _C, None


_C, _EXTENSION_ERROR = _load_extension()

if _C is None:
    backends.register_backend("cpp", None, (), _EXTENSION_ERROR)
    backends.register_backend("cuda", None, (), _EXTENSION_ERROR)
    BUILD_INFO: dict = {}
else:
    BUILD_INFO = dict(_C.build_info())
    _lib = torch.ops.bezier_kernels
    _compiled_ops = backends.KernelOps(_lib.path_fwd.default, _lib.path_bwd.default, _lib.loss_fwd.default)
    threads = "OpenMP" if BUILD_INFO["openmp"] else "single-threaded build (no OpenMP)"
    register_kernel_ops("cpp", _compiled_ops, ("cpu",), f"C++ CPU kernels, {threads}")
    if not BUILD_INFO["cuda"]:
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
    backends.register_backend("cuda", _compiled_ops, cuda_devices, cuda_reason)
