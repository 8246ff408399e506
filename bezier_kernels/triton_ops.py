"""The "triton" backend: Triton kernels, their launchers and their registration as custom ops.

Ops (the schemas of csrc/bezier_ops.cpp; fake kernels and autograd are the shared ones of
bezier_kernels.ops): bezier_kernels::triton_path_fwd, triton_path_bwd, triton_loss_fwd.
Features are flattened to D with unit stride by the caller; batch and point strides are free
(guides may be a view of a stacked [B, n+1, D] tensor), and every offset is 64-bit.

Kernels (each program owns BLOCK_B samples and walks its feature blocks; degree is a runtime
loop bound):
    _bernstein_weights_kernel  prologue, one launch: w[r, i, b] of a few consecutive derivative
                               orders, float64 maths, stored in the accumulation dtype
    _path_fwd_kernel           every requested order in one pass over the control points
    _path_bwd_kernel           dL/dP_i = sum_k w_k[i] g_k, and per-program partial sums of
                               sum_k g_k * B^(k+1) for dL/dt (orders up to 3; dL/dt itself when
                               one program covers a sample's features)
    _loss_fwd_kernel           residual r (written once: it is the saved gradient direction) and
                               per-program partial sums of r^2 and r dr/dt, or, when one program
                               covers a sample's features (D <= 1024), the per-sample results
    _loss_finish_kernel        otherwise adds each sample's partials in a fixed order
                               (deterministic, no atomics): per-sample loss, scale, dloss/dt

Weights: the same maths as csrc/bezier_common.h and reference.bernstein_weights (float64
C(m,l) t^l (1-t)^(m-l) with m = n - k, k differences, times n!/(n-k)!; exact at t = 0 and 1),
in one small Triton launch per op call. Reusing the pure-PyTorch reference.bernstein_weights
would launch 10 to 20 small kernels per order (torch.profiler: 13 aten kernel calls for order 0,
23 for order 2, a host-to-device copy among them), each launch as long as a whole memory-bound
op of moderate size in eager mode; so the prologue is a kernel, checked against the reference
by tests/test_triton.py.

Kernel variants (constexprs; the degree is a runtime loop bound): the tile, BLOCK_D = next power
of two of D capped at _TILE with BLOCK_B = _TILE // BLOCK_D capped at _MAX_BLOCK_B (11 shapes),
and per dtype at most
    path_fwd   11 tiles x 3 order counts                                    = 33
    path_bwd   11 tiles x 3 order counts x 3 (points, t, both)              = 99
    loss_fwd   2 targets x (11 tiles x 2 losses finishing in-kernel + 1 tile with partials) = 46
    finish     2 losses;  weights prologue: BLOCK_N = next power of two of n + 1 (7 for n = 1..64)
               x 2 accumulation dtypes
compiled on first use only, times Triton's own specialisation of integer arguments divisible by
16. Block sizes are documented constants, not autotuned: the per-sample sums depend on BLOCK_D,
and a fixed choice keeps results reproducible run to run.

Registration, decided at import: with a CUDA device, torch.library.triton_op + wrap_triton, so
torch.compile sees the kernels. Under TRITON_INTERPRET=1 (set before triton is imported) the ops
run on CPU tensors and are plain torch.library.custom_op: triton_op would run its body on
FakeTensors when tracing, and wrap_triton hands back the raw interpreted kernel, which cannot run
on FakeTensors. Both use the same annotated bodies (triton_op infers the schema from them, so
`orders` reads SymInt[] where the C++ schema says int[]).
"""
import contextlib
from typing import Optional

import torch
from torch import Tensor
from torch.library import wrap_triton

from . import _validate, backends, ops
from .reference import compute_dtype

try:
    import triton
    import triton.language as tl
except ImportError as error:  # bezier_kernels/__init__.py records this as the reason
    raise ImportError(f"triton is not installed ({error}); pip install 'triton>=3.4'") from error

INTERPRETED = bool(triton.knobs.runtime.interpret)

# Control-point elements a program reads per point: BLOCK_B * BLOCK_D (4 warps: 8 per thread).
_TILE = 1024
# At most this many samples per program: taller tiles of a few features only add registers (per
# sample weights and offsets; 244 instead of 61 for the float16 backward at D = 2, ptxas sm_90).
_MAX_BLOCK_B = 128
_NUM_WARPS = 4
# Weights prologue: BLOCK_B * BLOCK_N points per program, times 16 (order, tap) pairs in float64.
_WEIGHTS_TILE = 128
# Samples per program of the loss finish.
_FINISH_BLOCK = 256
# CUDA's limit on grid axis 1; programs loop over the feature blocks beyond it.
_MAX_FEATURE_PROGRAMS = 65535
# Orders go up to 2 in outputs and to 3 inside the backward (dB^(k)/dt = B^(k+1)). A constexpr:
# jitted code may read only constexpr globals.
_MAX_ORDER = tl.constexpr(3)


# ----------------------------------------------------------------------------- kernels
# Control point i is x0 (i = 0), x1 (i = degree) or guide i - 1: a point loop selects its base
# pointer and batch stride by scalar selects (no branch, the same code for every point; pointer
# tiles are built per point, not kept live, to save registers) and moves the scalar weight
# offsets on by B. Jitted helpers are called per tile, never per point: the Triton interpreter, which runs
# every kernel in CI, pays milliseconds per helper call.
@triton.jit
def _bernstein_weights_kernel(t_ptr, w_ptr, B, degree, first_order, count, power_bits,
                              BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr):
    """w[j, i, b] = weight of control point i in the derivative of order k = first_order + j
    (j < count <= 4) of the degree-n curve at t[b]; t is float64 [B], w is [count, n+1, B].

    With m = n - k and b_{l,m}(t) = C(m,l) t^l (1-t)^(m-l) (zero outside 0..m), the k-th difference
    of the degree-m basis times n!/(n-k)!, as csrc/bezier_common.h (zero for k > n):
        w_k[i] = n!/(n-k)! * sum_{tap=0..k} (-1)^tap C(k, tap) b_{i-k+tap, m}(t)
    in float64, every (order, tap) pair at once on the last axis. Powers by repeated squaring over
    power_bits bits and C(m,0) = C(m,m) = 1, so t = 0 and t = 1 give the end points exactly.
    """
    TAPS: tl.constexpr = _MAX_ORDER + 1  # difference taps, and orders per launch
    rows = tl.program_id(0).to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)
    t = tl.load(t_ptr + rows, mask=rows < B, other=0.0)[:, None, None]
    s = 1.0 - t
    point = tl.arange(0, BLOCK_N)[None, :, None]
    pair = tl.arange(0, TAPS * TAPS)[None, None, :]
    k = first_order + pair // TAPS
    tap = pair % TAPS
    m = degree - k
    l = point - k + tap
    valid = (l >= 0) & (l <= m) & (tap <= k)
    l = tl.where(valid, l, 0)
    s_exponent = tl.where(valid, m - l, 0)
    # C(m, l) = prod_{f <= min(l, m-l)} (m - min + f) / f: exact integers below 2^53, a few ulps
    # above, and 1 exactly at l = 0 and l = m
    short = tl.minimum(l, s_exponent)
    binomial = tl.full([1, BLOCK_N, TAPS * TAPS], 1.0, tl.float64)
    for f in range(1, (degree - first_order) // 2 + 1):
        binomial = tl.where(f <= short, binomial * (m - short + f) / f, binomial)
    t_power = tl.full([BLOCK_B, BLOCK_N, TAPS * TAPS], 1.0, tl.float64)
    s_power = tl.full([BLOCK_B, BLOCK_N, TAPS * TAPS], 1.0, tl.float64)
    for bit in range(0, power_bits):
        t_power = tl.where(((l >> bit) & 1) != 0, t_power * t, t_power)
        s_power = tl.where(((s_exponent >> bit) & 1) != 0, s_power * s, s_power)
        t = t * t
        s = s * s
    # (-1)^tap C(k, tap) * n!/(n-k)!
    coef = tl.where(tap == 0, 1, tl.where(tap == 1, -k, tl.where(tap == 2, k * (k - 1) // 2,
                                                                   -(k * (k - 1) * (k - 2) // 6)))).to(tl.float64)
    for step in tl.static_range(_MAX_ORDER):
        coef = tl.where(step < k, coef * (degree - step), coef)
    terms = tl.where(valid, coef * binomial * t_power * s_power, 0.0)
    w = tl.sum(tl.reshape(terms, [BLOCK_B, BLOCK_N, TAPS, TAPS]), axis=3)  # [b, i, j]
    j = tl.arange(0, TAPS)[None, None, :]
    out = w_ptr + tl.cast(j * (degree + 1) + point, tl.int64) * B + rows[:, None, None]
    tl.store(out, w.to(w_ptr.dtype.element_ty), mask=(rows[:, None, None] < B) & (point <= degree) & (j < count))


@triton.jit
def _weight_offsets(row0, row1, row2, degree, B):
    """Offsets of control point 0's weights in weight rows row_k of the [rows, n+1, B] weight table;
    a point's are B further on than the previous one's."""
    return (tl.cast(row0 * (degree + 1), tl.int64) * B, tl.cast(row1 * (degree + 1), tl.int64) * B,
            tl.cast(row2 * (degree + 1), tl.int64) * B)


@triton.jit
def _point_weights(weights, w0, w1, w2, row_mask, B, NUM_ORDERS: tl.constexpr):
    """One control point's weights for the rows' samples in orders k < NUM_ORDERS (0 beyond), and
    the offsets of the next point's."""
    c0 = tl.load(weights + w0, mask=row_mask, other=0.0)
    c1 = tl.zeros_like(c0)
    c2 = tl.zeros_like(c0)
    if NUM_ORDERS > 1:
        c1 = tl.load(weights + w1, mask=row_mask, other=0.0)
    if NUM_ORDERS > 2:
        c2 = tl.load(weights + w2, mask=row_mask, other=0.0)
    return c0, c1, c2, w0 + B, w1 + B, w2 + B


@triton.jit
def _point_address(point, degree, x0_ptr, x1_ptr, guides_ptr, x0_stride, x1_stride, guides_stride,
                   guides_point_stride):
    """Control point `point` of [x0, guides..., x1]: its base pointer and batch stride."""
    first = point == 0
    last = point == degree
    inner = guides_ptr + tl.cast(point - 1, tl.int64) * guides_point_stride
    base = tl.where(first, x0_ptr, tl.where(last, x1_ptr, inner))
    stride = tl.where(first, x0_stride, tl.where(last, x1_stride, guides_stride))
    return base, stride


@triton.jit
def _combine_points(x0_ptr, x1_ptr, guides_ptr, w_ptr, rows, cols, mask, B, degree,
                    x0_stride, x1_stride, guides_stride, guides_point_stride, row0, row1, row2,
                    NUM_ORDERS: tl.constexpr, ACC: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_D: tl.constexpr):
    """One pass over the control points of a tile (samples rows [BLOCK_B, 1], features cols
    [1, BLOCK_D]): acc_k = sum_i w[row_k, i, b] * P_i[b, d] for k < NUM_ORDERS (zeros beyond),
    in ACC; also returns the last point, x1."""
    row_mask = rows < B
    weights = w_ptr + rows  # + (row * (n+1) + point) * B: the samples' weights of a point
    w0, w1, w2 = _weight_offsets(row0, row1, row2, degree, B)
    acc0 = tl.zeros([BLOCK_B, BLOCK_D], ACC)
    acc1 = tl.zeros([BLOCK_B, BLOCK_D], ACC)
    acc2 = tl.zeros([BLOCK_B, BLOCK_D], ACC)
    p = tl.zeros([BLOCK_B, BLOCK_D], ACC)
    for point in range(0, degree + 1):
        base, stride = _point_address(point, degree, x0_ptr, x1_ptr, guides_ptr, x0_stride, x1_stride,
                                      guides_stride, guides_point_stride)
        p = tl.load(base + rows * stride + cols, mask=mask, other=0.0).to(ACC)
        c0, c1, c2, w0, w1, w2 = _point_weights(weights, w0, w1, w2, row_mask, B, NUM_ORDERS)
        acc0 = tl.fma(c0, p, acc0)
        if NUM_ORDERS > 1:
            acc1 = tl.fma(c1, p, acc1)
        if NUM_ORDERS > 2:
            acc2 = tl.fma(c2, p, acc2)
    return acc0, acc1, acc2, p


@triton.jit
def _path_fwd_kernel(x0_ptr, x1_ptr, guides_ptr, w_ptr, out0_ptr, out1_ptr, out2_ptr,
                     B, D, degree, x0_stride, x1_stride, guides_stride, guides_point_stride,
                     row0, row1, row2,
                     NUM_ORDERS: tl.constexpr, ACC: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_D: tl.constexpr):
    """out_k[b, d] = sum_i w[row_k, i, b] * P_i[b, d] for k < NUM_ORDERS; outputs [B, D] contiguous."""
    rows = (tl.program_id(0).to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B))[:, None]
    for start in range(tl.program_id(1) * BLOCK_D, D, tl.num_programs(1) * BLOCK_D):
        cols = tl.multiple_of(start, BLOCK_D) + tl.arange(0, BLOCK_D)[None, :]
        mask = (rows < B) & (cols < D)
        acc0, acc1, acc2, _ = _combine_points(x0_ptr, x1_ptr, guides_ptr, w_ptr, rows, cols, mask, B, degree,
                                              x0_stride, x1_stride, guides_stride, guides_point_stride,
                                              row0, row1, row2, NUM_ORDERS, ACC, BLOCK_B, BLOCK_D)
        out = rows * D + cols
        tl.store(out0_ptr + out, acc0.to(out0_ptr.dtype.element_ty), mask=mask)
        if NUM_ORDERS > 1:
            tl.store(out1_ptr + out, acc1.to(out1_ptr.dtype.element_ty), mask=mask)
        if NUM_ORDERS > 2:
            tl.store(out2_ptr + out, acc2.to(out2_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _path_bwd_kernel(x0_ptr, x1_ptr, guides_ptr, w_ptr, g0_ptr, g1_ptr, g2_ptr,
                     gx0_ptr, gx1_ptr, gguides_ptr, t_partial_ptr,
                     B, D, degree, x0_stride, x1_stride, guides_stride, guides_point_stride,
                     g0_stride, g1_stride, g2_stride,
                     row0, row1, row2, next_row0, next_row1, next_row2,
                     NUM_ORDERS: tl.constexpr, POINTS_GRAD: tl.constexpr, T_GRAD: tl.constexpr,
                     ACC: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_D: tl.constexpr):
    """Backward of _path_fwd_kernel for the incoming gradients g_k [B, D] of the orders in weight
    rows row_k (their next orders in next_row_k).

    POINTS_GRAD: dL/dP_i[b, d] = sum_k w[row_k, i, b] g_k[b, d], written to gx0, gx1 ([B, D]) and
    gguides ([B, n-1, D]), all contiguous. T_GRAD: t_partial[b, program on axis 1] = the program's
    share of sum_d sum_k g_k[b, d] * B^(k+1)[b, d] = dL/dt_b (float64 sums; the whole of dL/dt_b,
    in t's dtype, when one program covers the features).
    """
    rows = (tl.program_id(0).to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B))[:, None]
    row_mask = rows < B
    t_sum = tl.zeros([BLOCK_B], tl.float64)
    for start in range(tl.program_id(1) * BLOCK_D, D, tl.num_programs(1) * BLOCK_D):
        cols = tl.multiple_of(start, BLOCK_D) + tl.arange(0, BLOCK_D)[None, :]
        mask = row_mask & (cols < D)
        g0 = tl.load(g0_ptr + rows * g0_stride + cols, mask=mask, other=0.0).to(ACC)
        g1 = tl.zeros([BLOCK_B, BLOCK_D], ACC)
        g2 = tl.zeros([BLOCK_B, BLOCK_D], ACC)
        if NUM_ORDERS > 1:
            g1 = tl.load(g1_ptr + rows * g1_stride + cols, mask=mask, other=0.0).to(ACC)
        if NUM_ORDERS > 2:
            g2 = tl.load(g2_ptr + rows * g2_stride + cols, mask=mask, other=0.0).to(ACC)
        if POINTS_GRAD:  # the gradients are contiguous: batch stride D (x0, x1) or (n-1) D (guides)
            weights = w_ptr + rows  # as in _combine_points
            w0, w1, w2 = _weight_offsets(row0, row1, row2, degree, B)
            for point in range(0, degree + 1):
                c0, c1, c2, w0, w1, w2 = _point_weights(weights, w0, w1, w2, row_mask, B, NUM_ORDERS)
                grad = c0 * g0
                if NUM_ORDERS > 1:
                    grad = tl.fma(c1, g1, grad)
                if NUM_ORDERS > 2:
                    grad = tl.fma(c2, g2, grad)
                base, stride = _point_address(point, degree, gx0_ptr, gx1_ptr, gguides_ptr, D, D,
                                              tl.cast(degree - 1, tl.int64) * D, D)
                tl.store(base + rows * stride + cols, grad.to(gx0_ptr.dtype.element_ty), mask=mask)
        if T_GRAD:  # B^(k+1) of the tile, then sum_k g_k B^(k+1) over its features
            dt0, dt1, dt2, _ = _combine_points(x0_ptr, x1_ptr, guides_ptr, w_ptr, rows, cols, mask, B, degree,
                                               x0_stride, x1_stride, guides_stride, guides_point_stride,
                                               next_row0, next_row1, next_row2, NUM_ORDERS, ACC, BLOCK_B, BLOCK_D)
            t_sum += tl.sum(g0 * dt0 + g1 * dt1 + g2 * dt2, axis=1).to(tl.float64)
    if T_GRAD:
        rows = tl.program_id(0).to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)
        tl.store(t_partial_ptr + rows * tl.num_programs(1) + tl.program_id(1),
                 t_sum.to(t_partial_ptr.dtype.element_ty), mask=rows < B)


@triton.jit
def _loss_fwd_kernel(pred_ptr, x0_ptr, x1_ptr, guides_ptr, t_ptr, w_ptr, row_weight_ptr, out_scale_ptr, resid_ptr,
                     sq_partial_ptr, rdt_partial_ptr, loss_ptr, scale_ptr, dt_ptr, B, D, degree, pred_stride,
                     x0_stride, x1_stride, guides_stride, guides_point_stride, huber_c: tl.float64,
                     VELOCITY: tl.constexpr, FINISH: tl.constexpr, PSEUDO_HUBER: tl.constexpr,
                     HAS_OUT_SCALE: tl.constexpr, ACC: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_D: tl.constexpr):
    """Fused loss forward. Weight row 0 holds the order the residual needs, row 1 its t-derivative:
        velocity: r = pred - B'(t),               dr/dt = -B''(t)
        endpoint: r = B(t) + (1 - t) pred - x1,   dr/dt = B'(t) - pred
    writes out_scale[b] * r (r without HAS_OUT_SCALE) to resid ([B, D] contiguous) and the program's
    float64 shares of sum_d r^2 and sum_d r dr/dt to sq_partial / rdt_partial [B, programs on axis 1],
    or, with FINISH (one program on axis 1 sees every feature), the per-sample loss, scale and
    dloss/dt (scaled by row_weight, see _finish_loss) directly."""
    rows = (tl.program_id(0).to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B))[:, None]
    row_mask = rows < B
    one_minus_t = (1.0 - tl.load(t_ptr + rows, mask=row_mask, other=0.0)).to(ACC)
    if HAS_OUT_SCALE:
        out_mult = tl.load(out_scale_ptr + rows, mask=row_mask, other=0.0).to(ACC)
    else:
        out_mult = tl.full([BLOCK_B, 1], 1.0, ACC)
    sq = tl.zeros([BLOCK_B], tl.float64)
    rdt = tl.zeros([BLOCK_B], tl.float64)
    for start in range(tl.program_id(1) * BLOCK_D, D, tl.num_programs(1) * BLOCK_D):
        cols = tl.multiple_of(start, BLOCK_D) + tl.arange(0, BLOCK_D)[None, :]
        mask = row_mask & (cols < D)
        value, slope, _, x1 = _combine_points(x0_ptr, x1_ptr, guides_ptr, w_ptr, rows, cols, mask, B, degree,
                                              x0_stride, x1_stride, guides_stride, guides_point_stride,
                                              0, 1, 0, 2, ACC, BLOCK_B, BLOCK_D)
        pred = tl.load(pred_ptr + rows * pred_stride + cols, mask=mask, other=0.0).to(ACC)
        if VELOCITY:
            r = pred - value
            dr_dt = -slope
        else:
            r = value + one_minus_t * pred - x1
            dr_dt = slope - pred
        r = tl.where(mask, r, 0.0)
        tl.store(resid_ptr + rows * D + cols, (out_mult * r).to(resid_ptr.dtype.element_ty), mask=mask)
        sq += tl.sum(r * r, axis=1).to(tl.float64)
        rdt += tl.sum(r * dr_dt, axis=1).to(tl.float64)
    rows = tl.program_id(0).to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)
    if FINISH:
        _finish_loss(loss_ptr, scale_ptr, dt_ptr, row_weight_ptr, rows, rows < B, sq, rdt, D, huber_c, PSEUDO_HUBER)
    else:
        partial = rows * tl.num_programs(1) + tl.program_id(1)
        tl.store(sq_partial_ptr + partial, sq, mask=rows < B)
        tl.store(rdt_partial_ptr + partial, rdt, mask=rows < B)


@triton.jit
def _finish_loss(loss_ptr, scale_ptr, dt_ptr, row_weight_ptr, rows, row_mask, sq, rdt, D, huber_c,
                 PSEUDO_HUBER: tl.constexpr):
    """Stores the per-sample loss, scale and dloss/dt from the float64 sums sq = sum r^2 and
    rdt = sum r dr/dt (LossOutputs of csrc/bezier_common.h): mse: loss = sq / D, scale = 2 / D;
    pseudo-Huber: root = sqrt(sq + c^2), loss = root - c, scale = 1 / root; then scale is multiplied
    by the sample's row weight m_b and dloss/dt = scale * rdt."""
    if PSEUDO_HUBER:
        root = tl.sqrt(sq + huber_c * huber_c)
        loss = root - huber_c
        scale = 1.0 / root
    else:
        loss = sq / D
        scale = tl.full(sq.shape, 2.0, tl.float64) / D
    scale = scale * tl.load(row_weight_ptr + rows, mask=row_mask, other=0.0)
    tl.store(loss_ptr + rows, loss.to(loss_ptr.dtype.element_ty), mask=row_mask)
    tl.store(scale_ptr + rows, scale.to(scale_ptr.dtype.element_ty), mask=row_mask)
    tl.store(dt_ptr + rows, (scale * rdt).to(dt_ptr.dtype.element_ty), mask=row_mask)


@triton.jit
def _loss_finish_kernel(sq_partial_ptr, rdt_partial_ptr, loss_ptr, scale_ptr, dt_ptr, row_weight_ptr, B, D,
                        num_partials, huber_c: tl.float64, PSEUDO_HUBER: tl.constexpr, BLOCK_B: tl.constexpr):
    """The per-sample results of _loss_fwd_kernel's partial sums [B, num_partials], added in a fixed
    order (reproducible, no atomics)."""
    rows = tl.program_id(0).to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)
    row_mask = rows < B
    sq = tl.zeros([BLOCK_B], tl.float64)
    rdt = tl.zeros([BLOCK_B], tl.float64)
    for j in range(0, num_partials):
        sq += tl.load(sq_partial_ptr + rows * num_partials + j, mask=row_mask, other=0.0)
        rdt += tl.load(rdt_partial_ptr + rows * num_partials + j, mask=row_mask, other=0.0)
    _finish_loss(loss_ptr, scale_ptr, dt_ptr, row_weight_ptr, rows, row_mask, sq, rdt, D, huber_c, PSEUDO_HUBER)


# ----------------------------------------------------------------------------- launchers
# Pointer arguments a launch does not use get a tensor that kernel only reads, never one it writes:
# under torch.compile each mutable argument becomes its own functional copy, and a written tensor
# passed twice could come back as its unwritten copy.
_TRITON_DTYPE = {torch.float32: tl.float32, torch.float64: tl.float64}


def _tile(num_features: int) -> tuple[int, int]:
    """(BLOCK_B, BLOCK_D): a program covers BLOCK_B samples by BLOCK_D features, up to _TILE elements."""
    block_d = min(triton.next_power_of_2(max(int(num_features), 1)), _TILE)
    return min(_TILE // block_d, _MAX_BLOCK_B), block_d


def _weights_block(degree: int) -> tuple[int, int]:
    """(BLOCK_B, BLOCK_N) of the weights prologue for a degree."""
    block_n = triton.next_power_of_2(int(degree) + 1)
    return max(1, _WEIGHTS_TILE // block_n), block_n


def _grid(batch: int, num_features: int) -> tuple[int, int, int, int]:
    """(BLOCK_B, BLOCK_D, sample programs, feature programs) of the main kernels."""
    block_b, block_d = _tile(num_features)
    return block_b, block_d, triton.cdiv(batch, block_b), min(triton.cdiv(num_features, block_d), _MAX_FEATURE_PROGRAMS)


def _device(x: Tensor):
    return torch.cuda.device(x.device) if x.device.type == "cuda" else contextlib.nullcontext()


def _check_points(x0: Tensor, x1: Tensor, guides: Optional[Tensor], t: Tensor) -> tuple[int, int, int]:
    """(B, D, degree) of a direct op call (user input is validated by the public API already)."""
    if x0.dim() != 2 or x1.shape != x0.shape or t.shape != (x0.shape[0],):
        raise ValueError(f"bezier_kernels triton ops take x0, x1 [B, D] and t [B], got {list(x0.shape)}, "
                         f"{list(x1.shape)}, {list(t.shape)}")
    B, D = x0.shape
    degree = 1 if guides is None else guides.shape[1] + 1
    tensors = [x0, x1] + ([guides] if guides is not None and degree > 1 else [])
    if any(x.dtype != x0.dtype or x.device != x0.device or (D > 1 and x.stride(-1) != 1) for x in tensors):
        raise ValueError("bezier_kernels triton ops need x0, x1, guides with one dtype and device, unit feature stride")
    if guides is not None and (guides.dim() != 3 or guides.shape[0] != B or guides.shape[2] != D):
        raise ValueError(f"guides must be [B, n-1, D] = [{B}, n-1, {D}], got {list(guides.shape)}")
    if degree > backends.MAX_KERNEL_DEGREE:
        raise ValueError(f"the triton kernels support degree 1..{backends.MAX_KERNEL_DEGREE}, got {degree}")
    return B, D, degree


def _point_args(x0: Tensor, x1: Tensor, guides: Optional[Tensor], degree: int) -> tuple:
    """Kernel arguments (x0, x1, guides, x0 stride, x1 stride, guides batch / point stride)."""
    if degree == 1:  # no guide is ever read; x0 stands in for the pointer
        return x0, x1, x0, x0.stride(0), x1.stride(0), 0, 0
    return x0, x1, guides, x0.stride(0), x1.stride(0), guides.stride(0), guides.stride(1)


def _bernstein_weights(t64: Tensor, degree: int, first_order: int, count: int, dtype: torch.dtype) -> Tensor:
    """Weights [count, n+1, B] in `dtype` of derivative orders first_order .. first_order + count - 1."""
    B = t64.shape[0]
    w = torch.empty((count, degree + 1, B), dtype=dtype, device=t64.device)
    if B > 0:
        block_b, block_n = _weights_block(degree)
        wrap_triton(_bernstein_weights_kernel)[(triton.cdiv(B, block_b),)](
            t64, w, B, degree, first_order, count, int(degree).bit_length(), BLOCK_B=block_b, BLOCK_N=block_n,
            num_warps=_NUM_WARPS)
    return w


def triton_path_fwd(x0: Tensor, x1: Tensor, guides: Optional[Tensor], t: Tensor, orders: list[int]) -> list[Tensor]:
    B, D, degree = _check_points(x0, x1, guides, t)
    orders = _validate.check_orders([int(k) for k in orders])  # concrete even where tracing made SymInts
    outputs = [torch.empty((B, D), dtype=x0.dtype, device=x0.device) for _ in orders]
    block_b, block_d, sample_programs, feature_programs = _grid(B, D)
    if sample_programs == 0 or feature_programs == 0:
        return outputs
    acc = compute_dtype(x0.dtype)
    first = min(orders)
    with _device(x0):
        w = _bernstein_weights(t.to(torch.float64).contiguous(), degree, first, max(orders) - first + 1, acc)
        weight_rows = [k - first for k in orders] + [0] * (3 - len(orders))
        out = outputs + [x0] * (3 - len(orders))  # unused slots: a tensor the kernel only reads
        x0_, x1_, guides_, *strides = _point_args(x0, x1, guides, degree)
        wrap_triton(_path_fwd_kernel)[(sample_programs, feature_programs)](
            x0_, x1_, guides_, w, *out, B, D, degree, *strides,
            *weight_rows, NUM_ORDERS=len(orders), ACC=_TRITON_DTYPE[acc], BLOCK_B=block_b, BLOCK_D=block_d,
            num_warps=_NUM_WARPS)
    return outputs


def triton_path_bwd(grads: list[Tensor], x0: Tensor, x1: Tensor, guides: Optional[Tensor], t: Tensor,
                    orders: list[int], points_grad: bool, t_grad: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    B, D, degree = _check_points(x0, x1, guides, t)
    orders = _validate.check_orders([int(k) for k in orders])
    if len(grads) != len(orders) or any(g.shape != (B, D) or g.dtype != x0.dtype for g in grads):
        raise ValueError(f"grads must be one [B, D] = [{B}, {D}] tensor in x0's dtype per order")
    grads = [g if D <= 1 or g.stride(1) == 1 else g.contiguous() for g in grads]

    def new(*shape):
        return torch.empty(shape, dtype=x0.dtype, device=x0.device)

    gx0, gx1 = (new(B, D), new(B, D)) if points_grad else (new(0), new(0))
    gguides = new(B, degree - 1, D) if points_grad and degree > 1 else new(0)
    block_b, block_d, sample_programs, feature_programs = _grid(B, D)
    # dL/dt: float64 partial sums [B, feature programs], or, with one program per sample, dL/dt itself
    direct = t_grad and feature_programs == 1
    t_partial = torch.empty((B,) if direct else (B, feature_programs if t_grad else 0),
                            dtype=t.dtype if direct else torch.float64, device=x0.device)
    if (points_grad or t_grad) and sample_programs > 0 and feature_programs > 0:
        acc = compute_dtype(x0.dtype)
        first = min(orders)
        last = max(orders) + (1 if t_grad else 0)
        with _device(x0):
            w = _bernstein_weights(t.to(torch.float64).contiguous(), degree, first, last - first + 1, acc)
            pad = 3 - len(orders)
            weight_rows = [k - first for k in orders] + [0] * pad
            next_rows = [min(k + 1, last) - first for k in orders] + [0] * pad
            g = grads + [grads[0]] * pad
            x0_, x1_, guides_, *strides = _point_args(x0, x1, guides, degree)
            wrap_triton(_path_bwd_kernel)[(sample_programs, feature_programs)](
                x0_, x1_, guides_, w, *g, gx0 if points_grad else x0, gx1 if points_grad else x0,
                gguides if points_grad and degree > 1 else x0, t_partial if t_grad else w,
                B, D, degree, *strides, *[x.stride(0) for x in g], *weight_rows, *next_rows,
                NUM_ORDERS=len(orders), POINTS_GRAD=points_grad, T_GRAD=t_grad, ACC=_TRITON_DTYPE[acc],
                BLOCK_B=block_b, BLOCK_D=block_d, num_warps=_NUM_WARPS)
    if not t_grad:
        gt = t.new_empty(0)
    else:
        gt = t_partial if direct else t_partial.sum(dim=1).to(t.dtype)
    return gx0, gx1, gguides, gt


def triton_loss_fwd(pred: Tensor, x0: Tensor, x1: Tensor, guides: Optional[Tensor], t: Tensor, row_weight: Tensor,
                    out_scale: Optional[Tensor], target: str, loss: str,
                    huber_c: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    B, D, degree = _check_points(x0, x1, guides, t)
    if pred.shape != x0.shape or pred.dtype != x0.dtype or (D > 1 and pred.stride(1) != 1):
        raise ValueError(f"pred must be [B, D] = {list(x0.shape)} in x0's dtype with unit feature stride")
    if target not in _validate.TARGETS or loss not in _validate.LOSSES:
        raise ValueError(f"target must be one of {_validate.TARGETS} and loss one of {_validate.LOSSES}, "
                         f"got {target!r}, {loss!r}")
    for name, factor in (("row_weight", row_weight), ("out_scale", out_scale)):
        if factor is not None and (factor.shape != (B,) or factor.dtype != torch.float64 or factor.device != x0.device
                                   or not factor.is_contiguous()):
            raise ValueError(f"{name} must be a contiguous float64 [B] tensor on x0's device")
    acc = compute_dtype(x0.dtype)
    resid = torch.empty((B, D), dtype=x0.dtype, device=x0.device)
    per_sample = [torch.empty((B,), dtype=acc, device=x0.device) for _ in range(3)]  # loss, scale, dloss/dt
    block_b, block_d, sample_programs, feature_programs = _grid(B, D)
    if sample_programs == 0:
        return per_sample[0], resid, per_sample[1], per_sample[2]
    finish = feature_programs == 1  # one program sees all of a sample's features: no partials
    sq_partial, rdt_partial = (torch.empty((B, 0 if finish else feature_programs), dtype=torch.float64,
                                           device=x0.device) for _ in range(2))
    velocity, pseudo_huber = target == "velocity", loss == "pseudo_huber"
    with _device(x0):
        t64 = t.to(torch.float64).contiguous()
        if feature_programs > 0:
            w = _bernstein_weights(t64, degree, 1 if velocity else 0, 2, acc)
            x0_, x1_, guides_, *strides = _point_args(x0, x1, guides, degree)
            wrap_triton(_loss_fwd_kernel)[(sample_programs, feature_programs)](
                pred, x0_, x1_, guides_, t64, w, row_weight, row_weight if out_scale is None else out_scale,
                resid, sq_partial, rdt_partial, *per_sample, B, D, degree, pred.stride(0), *strides, float(huber_c),
                VELOCITY=velocity, FINISH=finish, PSEUDO_HUBER=pseudo_huber, HAS_OUT_SCALE=out_scale is not None,
                ACC=_TRITON_DTYPE[acc],
                BLOCK_B=block_b, BLOCK_D=block_d, num_warps=_NUM_WARPS)
        if not finish:
            wrap_triton(_loss_finish_kernel)[(triton.cdiv(B, _FINISH_BLOCK),)](
                sq_partial, rdt_partial, *per_sample, row_weight, B, D, feature_programs, float(huber_c),
                PSEUDO_HUBER=pseudo_huber, BLOCK_B=_FINISH_BLOCK, num_warps=_NUM_WARPS)
    return per_sample[0], resid, per_sample[1], per_sample[2]


# ----------------------------------------------------------------------------- registration
def _where_it_runs() -> tuple[tuple[str, ...], str]:
    if INTERPRETED:
        return ("cpu",), "Triton kernels in the Triton interpreter (TRITON_INTERPRET=1), CPU tensors"
    if torch.cuda.is_available():
        return ("cuda",), f"Triton {triton.__version__} kernels, CUDA tensors"
    return (), "no CUDA device; set TRITON_INTERPRET=1 (before importing) to run the Triton kernels on the CPU"


def _register(fn):
    define = torch.library.custom_op if INTERPRETED else torch.library.triton_op
    define(f"bezier_kernels::{fn.__name__}", fn, mutates_args=())
    return getattr(torch.ops.bezier_kernels, fn.__name__).default


_devices, _reason = _where_it_runs()
ops.register_kernel_ops("triton", backends.KernelOps(_register(triton_path_fwd), _register(triton_path_bwd),
                                                     _register(triton_loss_fwd)), _devices, _reason)
