"""The "triton" backend: Triton kernels, their launchers and their registration as custom ops.

Ops (the schemas of csrc/bezier_ops.cpp; fake kernels and autograd are the shared ones of
bezier_kernels.ops): bezier_kernels::triton_path_fwd, triton_path_bwd, triton_loss_fwd,
triton_fused_loss.
Features are flattened to D with unit stride by the caller; batch and point strides are free
(guides may be a view of a stacked [B, n+1, D] tensor), and every offset is 64-bit.

Kernels (each program owns BLOCK_B samples and walks its feature blocks; degree is a runtime
loop bound). Launches: one per path op; a loss is its kernel, plus for "mean" and "sum" the sum
kernel, plus where a sample spans several programs (D > 1024) the finish kernel and, for
pseudo-Huber's dL/dpred, the row-scale kernel: 1 to 4.
    _path_fwd_kernel           every requested order in one pass over the control points
    _path_bwd_kernel           dL/dP_i = sum_k w_k[i] g_k, and per-program partial sums of
                               sum_k g_k * B^(k+1) for dL/dt (orders up to 3; dL/dt itself when
                               one program covers a sample's features)
    _loss_fwd_kernel           dL/dpred (or r, or out_scale r) written once, and per-program partial
                               sums of r^2 and r dr/dt, or, when one program covers a sample's
                               features (D <= 1024), the per-sample results and terms of the sum
    _loss_finish_kernel        otherwise adds each sample's partials in a fixed order
                               (deterministic, no atomics): per-sample loss, scale, dloss/dt
    _scale_rows_kernel         then pseudo-Huber's dL/dpred = (scale_b dr/dpred) r, row by row
    _sum_kernel                the fixed-order sum of the samples' terms of a "mean" or "sum"

Weights: the same maths as csrc/bezier_common.h and reference.bernstein_weights (float64
C(m,l) t^l (1-t)^(m-l) with m = n - k, k differences, times n!/(n-k)!; exact at t = 0 and 1),
computed per sample inside the point loop of each kernel (see the kernels section), from t read
in its own dtype and stride: no prologue launch, no weights table in memory, no float64 copy of t.
(The pure-PyTorch reference.bernstein_weights would launch 10 to 20 small kernels per order;
until 2026-12 a one-launch prologue kernel wrote a [orders, n+1, B] table the main kernels read.)
tests/test_triton.py checks the weights against the reference through the kernels themselves.

Kernel variants (constexprs; the degree is a runtime value, the orders are constexprs): the tile, BLOCK_D =
next power of two of D capped at _TILE with BLOCK_B = _TILE // BLOCK_D capped at _MAX_BLOCK_B
(11 shapes), and per dtype at most
    path_fwd   11 tiles x 7 sets of orders                                  = 77
    path_bwd   11 tiles x 7 sets of orders x 3 (points, t, both)            = 231
    loss_fwd   2 targets x 2 losses x (11 tiles finishing in-kernel + 1 tile with partials), times
               the flags of the call (weight, out_scale, dL/dpred or r, dt, value): the op's
               (loss_fwd) and the whole loss's (fused_loss) few combinations in practice
    finish     2 targets x 2 losses x the same flags;  row scale 11 tiles;  sum 1
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
if INTERPRETED:  # torch < 2.12's wrap_triton rejects the interpreter's kernels: launch them directly
    def wrap_triton(kernel):
        return kernel

# Control-point elements a program reads per point: BLOCK_B * BLOCK_D (4 warps: 8 per thread).
_TILE = 1024
# At most this many samples per program: taller tiles of a few features only add registers (per
# sample weights and offsets; 244 instead of 61 for the float16 backward at D = 2, ptxas sm_90).
_MAX_BLOCK_B = 128
_NUM_WARPS = 4
# Samples per program of the loss finish.
_FINISH_BLOCK = 256
# CUDA's limit on grid axis 1; programs loop over the feature blocks beyond it.
_MAX_FEATURE_PROGRAMS = 65535


# ----------------------------------------------------------------------------- kernels
# Control point i is x0 (i = 0), x1 (i = degree) or guide i - 1: a point loop selects its base
# pointer and batch stride by scalar selects (no branch, the same code for every point; pointer
# tiles are built per point, not kept live, to save registers).
#
# Weights are computed inside the point loop, per sample in float64 (no prologue launch, no table
# in memory): for derivative order k of the degree-n curve, with m = n - k and the basis
# b_l(t) = C(m, l) t^l (1-t)^(m-l) (zero outside 0..m),
#     w_k[i] = n!/(n-k)! * sum_{q=0..k} (-1)^(k-q) C(k, q) b_{i-q}(t)        (csrc/bezier_common.h)
# so as the loop reaches point i, one new basis value b_i joins a window of the last k. t^i is a
# running product; (1-t)^(m-i), whose exponent falls, is a product of squarings of 1 - t picked by
# the exponent's bits; C(m, i) is a running scalar (exact integers below 2^53, exactly 1 at i = m).
# So t = 0 and t = 1 give the end points exactly. The orders are constexprs (sorted, one per
# slot), so each slot keeps exactly the k window values its order needs: registers, not a table.
@triton.jit
def _falling(degree, K: tl.constexpr):
    """n!/(n-K)! as a float64 scalar (0 for K > n)."""
    f = tl.full([], 1.0, tl.float64)
    for step in tl.static_range(K):
        f = f * (degree - step)
    return f


@triton.jit
def _slot_weight(point, m, binomial, t_power, s_power, x1, x2, x3, K: tl.constexpr):
    """One order's weight of control point `point`, before the factor n!/(n-K)!: the new basis value
    b_point = C(m, point) t^point (1-t)^(m - point) (binomial = C(m, point), t_power = t^point, s_power
    = (1-t)^(m - point)) and the window x1, x2, x3 = b_{point-1}, b_{point-2}, b_{point-3} (the first K
    used). Returns the weight, C(m, point + 1) and the window moved on by one point."""
    b0 = tl.where(point <= m, tl.where(point == m, 1.0, binomial) * t_power * s_power, 0.0)
    if K == 0:
        w = b0
    elif K == 1:
        w = x1 - b0
    elif K == 2:
        w = b0 - 2.0 * x1 + x2
    else:
        w = 3.0 * (x1 - x2) + x3 - b0
    return w, binomial * (m - point) / (point + 1), b0, x1, x2


@triton.jit
def _point_weights(point, degree, power_bits, t_power, s, c0, c1, c2, a1, a2, a3, b1, b2, b3, d1, d2, d3,
                   K0: tl.constexpr, K1: tl.constexpr, K2: tl.constexpr, NUM_ORDERS: tl.constexpr,
                   BLOCK_B: tl.constexpr):
    """The weights of control point `point` in orders K0, K1, K2 (slots < NUM_ORDERS), float64 [BLOCK_B, 1],
    before their factors n!/(n-K)!; and each slot's state moved on by one point: C(n - K, point + 1)
    (c) and the basis window (a, b, d). t_power = t^point, s = 1 - t."""
    one = tl.full([BLOCK_B, 1], 1.0, tl.float64)
    e0 = tl.maximum(degree - K0 - point, 0)
    e1 = tl.maximum(degree - K1 - point, 0)
    e2 = tl.maximum(degree - K2 - point, 0)
    s0, s1, s2, square = one, one, one, s  # (1-t)^e of each slot, from the squarings of 1 - t
    for bit in range(0, power_bits):
        s0 = tl.where(((e0 >> bit) & 1) != 0, s0 * square, s0)
        if NUM_ORDERS > 1:
            s1 = tl.where(((e1 >> bit) & 1) != 0, s1 * square, s1)
        if NUM_ORDERS > 2:
            s2 = tl.where(((e2 >> bit) & 1) != 0, s2 * square, s2)
        square = square * square
    w0, c0, a1, a2, a3 = _slot_weight(point, degree - K0, c0, t_power, s0, a1, a2, a3, K0)
    w1 = w0
    w2 = w0
    if NUM_ORDERS > 1:
        w1, c1, b1, b2, b3 = _slot_weight(point, degree - K1, c1, t_power, s1, b1, b2, b3, K1)
    if NUM_ORDERS > 2:
        w2, c2, d1, d2, d3 = _slot_weight(point, degree - K2, c2, t_power, s2, d1, d2, d3, K2)
    return w0, w1, w2, c0, c1, c2, a1, a2, a3, b1, b2, b3, d1, d2, d3


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
def _load_times(t_ptr, t_stride, rows, row_mask):
    """t of the rows' samples [BLOCK_B, 1], read in its own dtype and stride, as float64."""
    return tl.load(t_ptr + rows * t_stride, mask=row_mask, other=0.0).to(tl.float64)


@triton.jit
def _combine_points(x0_ptr, x1_ptr, guides_ptr, t, rows, cols, mask, degree, power_bits,
                    x0_stride, x1_stride, guides_stride, guides_point_stride,
                    K0: tl.constexpr, K1: tl.constexpr, K2: tl.constexpr, NUM_ORDERS: tl.constexpr,
                    ACC: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_D: tl.constexpr):
    """One pass over the control points of a tile (samples rows [BLOCK_B, 1] at float64 times t
    [BLOCK_B, 1], features cols [1, BLOCK_D]): acc_j = B^(K_j)(t)[b, d] = sum_i w_{K_j}[i] P_i[b, d]
    for slots j < NUM_ORDERS (zeros beyond), in ACC; also returns the last point, x1."""
    f0 = _falling(degree, K0).to(ACC)
    f1 = _falling(degree, K1).to(ACC)
    f2 = _falling(degree, K2).to(ACC)
    zero = tl.zeros([BLOCK_B, 1], tl.float64)
    s = 1.0 - t
    t_power = zero + 1.0
    c0 = tl.full([], 1.0, tl.float64)  # C(n - K_j, point) of each slot
    c1 = c0
    c2 = c0
    a1, a2, a3 = zero, zero, zero  # basis windows of each slot
    b1, b2, b3 = zero, zero, zero
    d1, d2, d3 = zero, zero, zero
    acc0 = tl.zeros([BLOCK_B, BLOCK_D], ACC)
    acc1 = tl.zeros([BLOCK_B, BLOCK_D], ACC)
    acc2 = tl.zeros([BLOCK_B, BLOCK_D], ACC)
    p = tl.zeros([BLOCK_B, BLOCK_D], ACC)
    for point in range(0, degree + 1):
        base, stride = _point_address(point, degree, x0_ptr, x1_ptr, guides_ptr, x0_stride, x1_stride,
                                      guides_stride, guides_point_stride)
        p = tl.load(base + rows * stride + cols, mask=mask, other=0.0).to(ACC)
        w0, w1, w2, c0, c1, c2, a1, a2, a3, b1, b2, b3, d1, d2, d3 = _point_weights(
            point, degree, power_bits, t_power, s, c0, c1, c2, a1, a2, a3, b1, b2, b3, d1, d2, d3,
            K0, K1, K2, NUM_ORDERS, BLOCK_B)
        acc0 = tl.fma(w0.to(ACC), p, acc0)
        if NUM_ORDERS > 1:
            acc1 = tl.fma(w1.to(ACC), p, acc1)
        if NUM_ORDERS > 2:
            acc2 = tl.fma(w2.to(ACC), p, acc2)
        t_power = t_power * t
    return acc0 * f0, acc1 * f1, acc2 * f2, p


@triton.jit
def _path_fwd_kernel(x0_ptr, x1_ptr, guides_ptr, t_ptr, out0_ptr, out1_ptr, out2_ptr,
                     B, D, degree, power_bits, x0_stride, x1_stride, guides_stride, guides_point_stride, t_stride,
                     K0: tl.constexpr, K1: tl.constexpr, K2: tl.constexpr, NUM_ORDERS: tl.constexpr,
                     ACC: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_D: tl.constexpr):
    """out_j[b, d] = B^(K_j)(t_b)[d] for slots j < NUM_ORDERS; outputs [B, D] contiguous."""
    rows = (tl.program_id(0).to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B))[:, None]
    t = _load_times(t_ptr, t_stride, rows, rows < B)
    for start in range(tl.program_id(1) * BLOCK_D, D, tl.num_programs(1) * BLOCK_D):
        cols = tl.multiple_of(start, BLOCK_D) + tl.arange(0, BLOCK_D)[None, :]
        mask = (rows < B) & (cols < D)
        acc0, acc1, acc2, _ = _combine_points(x0_ptr, x1_ptr, guides_ptr, t, rows, cols, mask, degree, power_bits,
                                              x0_stride, x1_stride, guides_stride, guides_point_stride,
                                              K0, K1, K2, NUM_ORDERS, ACC, BLOCK_B, BLOCK_D)
        out = rows * D + cols
        tl.store(out0_ptr + out, acc0.to(out0_ptr.dtype.element_ty), mask=mask)
        if NUM_ORDERS > 1:
            tl.store(out1_ptr + out, acc1.to(out1_ptr.dtype.element_ty), mask=mask)
        if NUM_ORDERS > 2:
            tl.store(out2_ptr + out, acc2.to(out2_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _path_bwd_kernel(x0_ptr, x1_ptr, guides_ptr, t_ptr, g0_ptr, g1_ptr, g2_ptr,
                     gx0_ptr, gx1_ptr, gguides_ptr, t_partial_ptr,
                     B, D, degree, power_bits, x0_stride, x1_stride, guides_stride, guides_point_stride, t_stride,
                     g0_stride, g1_stride, g2_stride,
                     K0: tl.constexpr, K1: tl.constexpr, K2: tl.constexpr, NUM_ORDERS: tl.constexpr,
                     POINTS_GRAD: tl.constexpr, T_GRAD: tl.constexpr,
                     ACC: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_D: tl.constexpr):
    """Backward of _path_fwd_kernel for the incoming gradients g_j [B, D] of orders K_j.

    POINTS_GRAD: dL/dP_i[b, d] = sum_j w_{K_j}[i] g_j[b, d], written to gx0, gx1 ([B, D]) and
    gguides ([B, n-1, D]), all contiguous. T_GRAD: t_partial[b, program on axis 1] = the program's
    share of sum_d sum_j g_j[b, d] * B^(K_j + 1)[b, d] = dL/dt_b (float64 sums; the whole of dL/dt_b,
    in t's dtype, when one program covers the features).
    """
    rows = (tl.program_id(0).to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B))[:, None]
    row_mask = rows < B
    t = _load_times(t_ptr, t_stride, rows, row_mask)
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
            f0 = _falling(degree, K0)  # the weights' factors n!/(n-K)!
            f1 = _falling(degree, K1)
            f2 = _falling(degree, K2)
            zero = tl.zeros([BLOCK_B, 1], tl.float64)
            s = 1.0 - t
            t_power = zero + 1.0
            c0 = tl.full([], 1.0, tl.float64)
            c1 = c0
            c2 = c0
            a1, a2, a3 = zero, zero, zero
            b1, b2, b3 = zero, zero, zero
            d1, d2, d3 = zero, zero, zero
            for point in range(0, degree + 1):
                w0, w1, w2, c0, c1, c2, a1, a2, a3, b1, b2, b3, d1, d2, d3 = _point_weights(
                    point, degree, power_bits, t_power, s, c0, c1, c2, a1, a2, a3, b1, b2, b3, d1, d2, d3,
                    K0, K1, K2, NUM_ORDERS, BLOCK_B)
                grad = (w0 * f0).to(ACC) * g0
                if NUM_ORDERS > 1:
                    grad = tl.fma((w1 * f1).to(ACC), g1, grad)
                if NUM_ORDERS > 2:
                    grad = tl.fma((w2 * f2).to(ACC), g2, grad)
                t_power = t_power * t
                base, stride = _point_address(point, degree, gx0_ptr, gx1_ptr, gguides_ptr, D, D,
                                              tl.cast(degree - 1, tl.int64) * D, D)
                tl.store(base + rows * stride + cols, grad.to(gx0_ptr.dtype.element_ty), mask=mask)
        if T_GRAD:  # B^(k+1) of the tile, then sum_k g_k B^(k+1) over its features
            dt0, dt1, dt2, _ = _combine_points(x0_ptr, x1_ptr, guides_ptr, t, rows, cols, mask, degree, power_bits,
                                               x0_stride, x1_stride, guides_stride, guides_point_stride,
                                               K0 + 1, K1 + 1, K2 + 1, NUM_ORDERS, ACC, BLOCK_B, BLOCK_D)
            t_sum += tl.sum(g0 * dt0 + g1 * dt1 + g2 * dt2, axis=1).to(tl.float64)
    if T_GRAD:
        rows = tl.program_id(0).to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)
        tl.store(t_partial_ptr + rows * tl.num_programs(1) + tl.program_id(1),
                 t_sum.to(t_partial_ptr.dtype.element_ty), mask=rows < B)


@triton.jit
def _row_factors(t, weight_ptr, weight_stride, rows, row_mask, row_factor, HAS_WEIGHT: tl.constexpr,
                 VELOCITY: tl.constexpr):
    """(m, pf), float64, shaped like rows: m_b = weight_b * row_factor (row_factor alone without
    HAS_WEIGHT), sample b's factor in the reduced loss, and pf_b = dr/dpred (1, or 1 - t_b)."""
    ones = tl.full(t.shape, 1.0, tl.float64)
    if HAS_WEIGHT:
        m = tl.load(weight_ptr + rows * weight_stride, mask=row_mask, other=0.0).to(tl.float64) * row_factor
    else:
        m = ones * row_factor
    if VELOCITY:
        pf = ones
    else:
        pf = 1.0 - t
    return m, pf


@triton.jit
def _finish_samples(loss_ptr, scale_ptr, dt_ptr, value_ptr, rows, row_mask, sq, rdt, m, D, huber_c, loss_factor,
                    PSEUDO_HUBER: tl.constexpr, T_GRAD: tl.constexpr, VALUE: tl.constexpr):
    """Stores the per-sample results from the float64 sums sq = sum r^2 and rdt = sum r dr/dt (the
    LossOutputs of csrc/bezier_common.h) and returns scale. mse: l = sq / D, dl/dr = (2 / D) r;
    pseudo-Huber: root = sqrt(sq + c^2), l = root - c, dl/dr = r / root. Then loss_b = loss_factor l_b,
    scale_b = m_b dl/dr / r, dt_b = scale_b rdt_b (T_GRAD) and (VALUE) value_b = m_b l_b, in value's
    dtype (the loss itself for reduction "none", float64 terms of the sum otherwise)."""
    if PSEUDO_HUBER:
        root = tl.sqrt(sq + huber_c * huber_c)
        loss = root - huber_c
        scale = m / root
    else:
        loss = sq / D
        scale = m * (tl.full(sq.shape, 2.0, tl.float64) / D)
    scale = tl.where(D > 0, scale, 0.0)  # no features, no gradient (2 / D, 1 / root would be inf, dt NaN)
    tl.store(loss_ptr + rows, (loss * loss_factor).to(loss_ptr.dtype.element_ty), mask=row_mask)
    tl.store(scale_ptr + rows, scale.to(scale_ptr.dtype.element_ty), mask=row_mask)
    if T_GRAD:
        tl.store(dt_ptr + rows, (scale * rdt).to(dt_ptr.dtype.element_ty), mask=row_mask)
    if VALUE:
        tl.store(value_ptr + rows, (m * loss).to(value_ptr.dtype.element_ty), mask=row_mask)
    return scale


@triton.jit
def _loss_fwd_kernel(pred_ptr, x0_ptr, x1_ptr, guides_ptr, t_ptr, weight_ptr, out_scale_ptr, resid_ptr,
                     sq_partial_ptr, rdt_partial_ptr, loss_ptr, scale_ptr, dt_ptr, value_ptr,
                     B, D, degree, power_bits, pred_stride, x0_stride, x1_stride, guides_stride, guides_point_stride,
                     t_stride, weight_stride, row_factor: tl.float64, loss_factor: tl.float64, huber_c: tl.float64,
                     VELOCITY: tl.constexpr, FINISH: tl.constexpr, PSEUDO_HUBER: tl.constexpr,
                     HAS_WEIGHT: tl.constexpr, HAS_OUT_SCALE: tl.constexpr, GRADIENT: tl.constexpr,
                     T_GRAD: tl.constexpr, VALUE: tl.constexpr, ORDER: tl.constexpr, NUM_ORDERS: tl.constexpr,
                     ROW_AFTER: tl.constexpr, ACC: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_D: tl.constexpr):
    """Fused loss forward (orders: the one the residual needs and, with T_GRAD, its t-derivative's):
        velocity: r = pred - B'(t),               dr/dt = -B''(t)
        endpoint: r = B(t) + (1 - t) pred - x1,   dr/dt = B'(t) - pred
    writes to resid ([B, D] contiguous) out_scale_b r (HAS_OUT_SCALE), or with GRADIENT dL/dpred =
    scale_b pf_b r (see _finish_samples and _row_factors: mse's factor is known before the pass,
    pseudo-Huber's once the row is summed), else r. Per-sample results: with FINISH (one program,
    one feature block per sample) stored here (_finish_samples), else the program's float64 shares
    of sum_d r^2 and sum_d r dr/dt in sq_partial / rdt_partial [B, programs on axis 1].
    Derived constexprs (the launcher's; Triton 3.0 and 3.1 reject chained boolean operators):
    ORDER = 1 (velocity) or 0, NUM_ORDERS = 2 with T_GRAD else 1, ROW_AFTER = FINISH and GRADIENT
    and PSEUDO_HUBER (dL/dpred stored once the row's sum is known)."""
    rows = (tl.program_id(0).to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B))[:, None]
    row_mask = rows < B
    t = _load_times(t_ptr, t_stride, rows, row_mask)
    one_minus_t = (1.0 - t).to(ACC)
    if HAS_OUT_SCALE:
        out_mult = tl.load(out_scale_ptr + rows, mask=row_mask, other=0.0).to(ACC)
    elif GRADIENT and not PSEUDO_HUBER:  # (m and pf are read again after the loop: fewer live registers)
        m, pf = _row_factors(t, weight_ptr, weight_stride, rows, row_mask, row_factor, HAS_WEIGHT, VELOCITY)
        out_mult = (m * pf * (tl.full(m.shape, 2.0, tl.float64) / D)).to(ACC)
    else:
        out_mult = tl.full([BLOCK_B, 1], 1.0, ACC)
    sq = tl.zeros([BLOCK_B], tl.float64)
    rdt = tl.zeros([BLOCK_B], tl.float64)
    r_row = tl.zeros([BLOCK_B, BLOCK_D], ACC)
    for start in range(tl.program_id(1) * BLOCK_D, D, tl.num_programs(1) * BLOCK_D):
        cols = tl.multiple_of(start, BLOCK_D) + tl.arange(0, BLOCK_D)[None, :]
        mask = row_mask & (cols < D)
        value, slope, _, x1 = _combine_points(x0_ptr, x1_ptr, guides_ptr, t, rows, cols, mask, degree, power_bits,
                                              x0_stride, x1_stride, guides_stride, guides_point_stride,
                                              ORDER, ORDER + 1, ORDER, NUM_ORDERS, ACC, BLOCK_B, BLOCK_D)
        pred = tl.load(pred_ptr + rows * pred_stride + cols, mask=mask, other=0.0).to(ACC)
        if VELOCITY:
            r = pred - value
            dr_dt = -slope
        else:
            r = value + one_minus_t * pred - x1
            dr_dt = slope - pred
        r = tl.where(mask, r, 0.0)
        if ROW_AFTER:
            r_row = r
        else:
            tl.store(resid_ptr + rows * D + cols, (out_mult * r).to(resid_ptr.dtype.element_ty), mask=mask)
        sq += tl.sum(r * r, axis=1).to(tl.float64)
        if T_GRAD:
            rdt += tl.sum(r * dr_dt, axis=1).to(tl.float64)
    samples = tl.program_id(0).to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)
    if FINISH:
        t = _load_times(t_ptr, t_stride, samples, samples < B)
        m, pf = _row_factors(t, weight_ptr, weight_stride, samples, samples < B, row_factor, HAS_WEIGHT, VELOCITY)
        scale = _finish_samples(loss_ptr, scale_ptr, dt_ptr, value_ptr, samples, samples < B, sq, rdt, m, D, huber_c,
                                loss_factor, PSEUDO_HUBER, T_GRAD, VALUE)
        if ROW_AFTER:  # FINISH: the one feature block, still in registers
            cols = tl.arange(0, BLOCK_D)[None, :]
            f = (scale * pf).to(ACC)[:, None]
            tl.store(resid_ptr + rows * D + cols, (f * r_row).to(resid_ptr.dtype.element_ty),
                     mask=row_mask & (cols < D))
    else:
        partial = samples * tl.num_programs(1) + tl.program_id(1)
        tl.store(sq_partial_ptr + partial, sq, mask=samples < B)
        tl.store(rdt_partial_ptr + partial, rdt, mask=samples < B)


@triton.jit
def _loss_finish_kernel(sq_partial_ptr, rdt_partial_ptr, loss_ptr, scale_ptr, dt_ptr, value_ptr, row_mult_ptr,
                        t_ptr, weight_ptr, B, D, num_partials, t_stride, weight_stride, row_factor: tl.float64,
                        loss_factor: tl.float64, huber_c: tl.float64, VELOCITY: tl.constexpr,
                        PSEUDO_HUBER: tl.constexpr, HAS_WEIGHT: tl.constexpr, GRADIENT: tl.constexpr,
                        T_GRAD: tl.constexpr, VALUE: tl.constexpr, BLOCK_B: tl.constexpr):
    """The per-sample results of _loss_fwd_kernel's partial sums [B, num_partials], added in a fixed
    order (reproducible, no atomics); with GRADIENT and PSEUDO_HUBER also row_mult_b = scale_b pf_b,
    the factor _scale_rows_kernel applies to r afterwards."""
    rows = tl.program_id(0).to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)
    row_mask = rows < B
    sq = tl.zeros([BLOCK_B], tl.float64)
    rdt = tl.zeros([BLOCK_B], tl.float64)
    for j in range(0, num_partials):
        sq += tl.load(sq_partial_ptr + rows * num_partials + j, mask=row_mask, other=0.0)
        rdt += tl.load(rdt_partial_ptr + rows * num_partials + j, mask=row_mask, other=0.0)
    t = _load_times(t_ptr, t_stride, rows, row_mask)
    m, pf = _row_factors(t, weight_ptr, weight_stride, rows, row_mask, row_factor, HAS_WEIGHT, VELOCITY)
    scale = _finish_samples(loss_ptr, scale_ptr, dt_ptr, value_ptr, rows, row_mask, sq, rdt, m, D, huber_c,
                            loss_factor, PSEUDO_HUBER, T_GRAD, VALUE)
    if GRADIENT and PSEUDO_HUBER:
        tl.store(row_mult_ptr + rows, (scale * pf).to(row_mult_ptr.dtype.element_ty), mask=row_mask)


@triton.jit
def _scale_rows_kernel(out_ptr, row_mult_ptr, B, D, BLOCK_B: tl.constexpr, BLOCK_D: tl.constexpr):
    """out[b, d] *= row_mult[b] for out [B, D] contiguous (grid and tiles as the main kernels)."""
    rows = (tl.program_id(0).to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B))[:, None]
    row_mask = rows < B
    f = tl.load(row_mult_ptr + rows, mask=row_mask, other=0.0)
    for start in range(tl.program_id(1) * BLOCK_D, D, tl.num_programs(1) * BLOCK_D):
        cols = tl.multiple_of(start, BLOCK_D) + tl.arange(0, BLOCK_D)[None, :]
        mask = row_mask & (cols < D)
        x = tl.load(out_ptr + rows * D + cols, mask=mask, other=0.0).to(f.dtype)
        tl.store(out_ptr + rows * D + cols, (f * x).to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _sum_kernel(partial_ptr, value_ptr, count, BLOCK: tl.constexpr):
    """value = sum of partial[0 .. count) (float64, one program, a fixed order), in value's dtype.
    (A per-program sum inside the loss kernel would save this launch, but its cross-thread reduction
    made ptxas spill registers in the [16, 64] tiles.)"""
    total = tl.zeros([BLOCK], tl.float64)
    for start in range(0, count, BLOCK):
        offsets = start + tl.arange(0, BLOCK)
        total += tl.load(partial_ptr + offsets, mask=offsets < count, other=0.0)
    tl.store(value_ptr, tl.sum(total, axis=0).to(value_ptr.dtype.element_ty))


# ----------------------------------------------------------------------------- launchers
# Pointer arguments a launch does not use get a tensor that kernel only reads, never one it writes:
# under torch.compile each mutable argument becomes its own functional copy, and a written tensor
# passed twice could come back as its unwritten copy.
_TRITON_DTYPE = {torch.float32: tl.float32, torch.float64: tl.float64}


def _tile(num_features: int) -> tuple[int, int]:
    """(BLOCK_B, BLOCK_D): a program covers BLOCK_B samples by BLOCK_D features, up to _TILE elements."""
    block_d = min(triton.next_power_of_2(max(int(num_features), 1)), _TILE)
    return min(_TILE // block_d, _MAX_BLOCK_B), block_d


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


def _slots(orders: tuple[int, ...]) -> tuple[list[int], dict]:
    """The kernels' order slots: the positions of `orders` in increasing order, and the constexprs
    K0, K1, K2 (the sorted orders; an unused slot repeats the first) and NUM_ORDERS."""
    slots = sorted(range(len(orders)), key=lambda j: orders[j])
    ks = [orders[j] for j in slots] + [orders[slots[0]]] * (3 - len(orders))
    return slots, {"K0": ks[0], "K1": ks[1], "K2": ks[2], "NUM_ORDERS": len(orders)}


def _power_bits(degree: int) -> int:
    """Bits of the largest exponent of 1 - t a kernel raises it to (the degree)."""
    return int(degree).bit_length()


def triton_path_fwd(x0: Tensor, x1: Tensor, guides: Optional[Tensor], t: Tensor, orders: list[int]) -> list[Tensor]:
    B, D, degree = _check_points(x0, x1, guides, t)
    orders = _validate.check_orders([int(k) for k in orders])  # concrete even where tracing made SymInts
    outputs = [torch.empty((B, D), dtype=x0.dtype, device=x0.device) for _ in orders]
    block_b, block_d, sample_programs, feature_programs = _grid(B, D)
    if sample_programs == 0 or feature_programs == 0:
        return outputs
    acc = compute_dtype(x0.dtype)
    with _device(x0):
        slots, orders_meta = _slots(orders)
        out = [outputs[j] for j in slots] + [x0] * (3 - len(orders))  # unused slots: a tensor the kernel only reads
        x0_, x1_, guides_, *strides = _point_args(x0, x1, guides, degree)
        wrap_triton(_path_fwd_kernel)[(sample_programs, feature_programs)](
            x0_, x1_, guides_, t, *out, B, D, degree, _power_bits(degree), *strides, t.stride(0),
            **orders_meta, ACC=_TRITON_DTYPE[acc], BLOCK_B=block_b, BLOCK_D=block_d, num_warps=_NUM_WARPS)
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
        with _device(x0):
            slots, orders_meta = _slots(orders)
            g = [grads[j] for j in slots] + [grads[slots[0]]] * (3 - len(orders))
            x0_, x1_, guides_, *strides = _point_args(x0, x1, guides, degree)
            wrap_triton(_path_bwd_kernel)[(sample_programs, feature_programs)](
                x0_, x1_, guides_, t, *g, gx0 if points_grad else x0, gx1 if points_grad else x0,
                gguides if points_grad and degree > 1 else x0, t_partial if t_grad else x0,
                B, D, degree, _power_bits(degree), *strides, t.stride(0), *[x.stride(0) for x in g],
                **orders_meta, POINTS_GRAD=points_grad, T_GRAD=t_grad, ACC=_TRITON_DTYPE[acc],
                BLOCK_B=block_b, BLOCK_D=block_d, num_warps=_NUM_WARPS)
    if not t_grad:
        gt = t.new_empty(0)
    else:
        gt = t_partial if direct else t_partial.sum(dim=1).to(t.dtype)
    return gx0, gx1, gguides, gt


def _check_pred(pred: Tensor, x0: Tensor) -> None:
    D = x0.shape[1]
    if pred.shape != x0.shape or pred.dtype != x0.dtype or pred.device != x0.device or (D > 1 and pred.stride(1) != 1):
        raise ValueError(f"pred must be [B, D] = {list(x0.shape)} in x0's dtype with unit feature stride")


def _launch_loss(pred: Tensor, x0: Tensor, x1: Tensor, guides: Optional[Tensor], t: Tensor, weight: Optional[Tensor],
                 out_scale: Optional[Tensor], outputs: tuple, target: str, loss: str, huber_c: float, *,
                 row_factor: float, loss_factor: float, gradient: bool, t_grad: bool, reduce: int,
                 value: Optional[Tensor]) -> None:
    """Fills outputs = (loss [B], out [B, D], scale [B], dt [B] or [0]) and, for reduce 1 ([B]) or 2
    ([]), value: _loss_fwd_kernel, then for samples spanning several programs _loss_finish_kernel
    (and _scale_rows_kernel for pseudo-Huber's dL/dpred), then for reduce 2 _sum_kernel."""
    B, D, degree = _check_points(x0, x1, guides, t)
    per_sample, out, scale, dt = outputs
    block_b, block_d, sample_programs, feature_programs = _grid(B, D)
    if sample_programs == 0:
        return
    finish = feature_programs == 1  # one program sees all of a sample's features: no partials
    sq_partial, rdt_partial = (torch.empty((B, 0 if finish else feature_programs), dtype=torch.float64,
                                           device=x0.device) for _ in range(2))
    # reduce 2: each sample's term m_b l_b of the sum, float64, added in a fixed order by _sum_kernel
    sums = torch.empty((B,), dtype=torch.float64, device=x0.device) if reduce == 2 else None
    velocity, pseudo_huber = target == "velocity", loss == "pseudo_huber"
    flags = dict(VELOCITY=velocity, PSEUDO_HUBER=pseudo_huber, HAS_WEIGHT=weight is not None, GRADIENT=gradient,
                 T_GRAD=t_grad, VALUE=reduce > 0)
    # unused pointers: tensors the kernels only read
    weight_ = t if weight is None else weight
    value_ = sums if sums is not None else value if reduce else t
    dt_ = dt if t_grad else t
    weight_stride = 0 if weight is None else weight.stride(0)
    with _device(x0):
        if feature_programs > 0:
            x0_, x1_, guides_, *strides = _point_args(x0, x1, guides, degree)
            wrap_triton(_loss_fwd_kernel)[(sample_programs, feature_programs)](
                pred, x0_, x1_, guides_, t, weight_, t if out_scale is None else out_scale, out,
                sq_partial, rdt_partial, per_sample, scale, dt_, value_, B, D, degree, _power_bits(degree),
                pred.stride(0), *strides, t.stride(0), weight_stride, float(row_factor), float(loss_factor),
                float(huber_c), FINISH=finish, HAS_OUT_SCALE=out_scale is not None, **flags,
                ORDER=1 if velocity else 0, NUM_ORDERS=2 if t_grad else 1,
                ROW_AFTER=finish and gradient and pseudo_huber,
                ACC=_TRITON_DTYPE[compute_dtype(x0.dtype)], BLOCK_B=block_b, BLOCK_D=block_d, num_warps=_NUM_WARPS)
        if not finish:
            row_mult = torch.empty((B if gradient and pseudo_huber else 0,), dtype=scale.dtype, device=x0.device)
            wrap_triton(_loss_finish_kernel)[(triton.cdiv(B, _FINISH_BLOCK),)](
                sq_partial, rdt_partial, per_sample, scale, dt_, value_, row_mult if gradient and pseudo_huber else t,
                t, weight_, B, D, feature_programs, t.stride(0), weight_stride, float(row_factor), float(loss_factor),
                float(huber_c), **flags, BLOCK_B=_FINISH_BLOCK, num_warps=_NUM_WARPS)
            if gradient and pseudo_huber and feature_programs > 0:
                wrap_triton(_scale_rows_kernel)[(sample_programs, feature_programs)](
                    out, row_mult, B, D, BLOCK_B=block_b, BLOCK_D=block_d, num_warps=_NUM_WARPS)
        if sums is not None:
            wrap_triton(_sum_kernel)[(1,)](sums, value, sums.shape[0], BLOCK=_FINISH_BLOCK, num_warps=_NUM_WARPS)


def triton_loss_fwd(pred: Tensor, x0: Tensor, x1: Tensor, guides: Optional[Tensor], t: Tensor, row_weight: Tensor,
                    out_scale: Optional[Tensor], target: str, loss: str,
                    huber_c: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    B, D, _ = _check_points(x0, x1, guides, t)
    _check_pred(pred, x0)
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
    _launch_loss(pred, x0, x1, guides, t, row_weight, out_scale, (per_sample[0], resid, per_sample[1], per_sample[2]),
                 target, loss, huber_c, row_factor=1.0, loss_factor=1.0, gradient=False, t_grad=True, reduce=0,
                 value=None)
    return per_sample[0], resid, per_sample[1], per_sample[2]


def triton_fused_loss(pred: Tensor, x0: Tensor, x1: Tensor, guides: Optional[Tensor], t: Tensor,
                      weight: Optional[Tensor], target: str, loss: str, huber_c: float, reduction: str, residual: bool,
                      t_grad: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The whole loss (the schema of bezier_kernels::fused_loss, outputs FusedLossTensors of
    csrc/bezier_ops.h): m_b, the output's factor, the per-sample results and the reduction in the
    kernels. Launches: one where one program covers a sample's features (D <= 1024), plus for "mean"
    and "sum" one for the fixed-order sum of the samples' terms (no atomics: reproducible); with
    D > 1024 also the finish kernel and, for pseudo-Huber's dL/dpred, the row-scale kernel."""
    B, D, _ = _check_points(x0, x1, guides, t)
    _check_pred(pred, x0)
    if target not in _validate.TARGETS or loss not in _validate.LOSSES or reduction not in _validate.REDUCTIONS:
        raise ValueError(f"target, loss and reduction must be one of {_validate.TARGETS}, {_validate.LOSSES}, "
                         f"{_validate.REDUCTIONS}, got {target!r}, {loss!r}, {reduction!r}")
    if weight is not None and (weight.shape != (B,) or not weight.is_floating_point() or weight.device != x0.device):
        raise ValueError(f"weight must be a floating [B] = [{B}] tensor on x0's device")
    acc = compute_dtype(pred.dtype)

    def new(shape, dtype):
        return torch.empty(shape, dtype=dtype, device=pred.device)

    value = new((B,) if reduction == "none" else (), pred.dtype)
    outputs = (new((B,), acc), new((B, D), pred.dtype), new((B,), acc), new((B if t_grad else 0,), acc))
    if B == 0 and reduction != "none":  # the sum of nothing, and its mean (NaN, as torch.mean)
        value.fill_(float("nan") if reduction == "mean" else 0.0)
    _launch_loss(pred, x0, x1, guides, t, weight, None, outputs, target, loss, huber_c,
                 row_factor=1.0 / B if reduction == "mean" and B > 0 else 1.0,
                 loss_factor=1.0 / B if reduction == "mean" and B > 0 else 1.0, gradient=not residual, t_grad=t_grad,
                 reduce=1 if reduction == "none" else 2, value=value)
    weight_grad, out, scale, dt = outputs
    return value, out, weight_grad, scale, dt


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
                                                     _register(triton_loss_fwd), _register(triton_fused_loss)),
                        _devices, _reason)
