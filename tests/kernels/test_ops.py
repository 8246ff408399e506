"""Every backend against the float64 reference (docs/spec.md section 4): path, gradients, loss, edge cases."""
from __future__ import annotations

import pytest
import torch

import bezier_kernels as bk
from bezier_kernels import reference

from kernel_cases import DTYPES, TOLERANCE, gradcheck, interpreted, make_path, reference64, rel_err, skip_unsupported

DEGREES = [1, 2, 3, 4, 7, 16, 33, 64]
ORDER_SETS = [(0,), (1,), (2,), (0, 1), (1, 0), (0, 1, 2), (2, 0)]


def _check_outputs(outs, refs, dtype, orders, batch, features):
    assert len(outs) == len(orders)
    for k, out, ref in zip(orders, outs, refs):
        assert out.dtype == dtype and out.shape == (batch,) + tuple(features), (k, out.shape)
        assert rel_err(out, ref) <= TOLERANCE[dtype], (k, rel_err(out, ref))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("degree", DEGREES)
def test_path_matches_float64_reference(backend_device, degree, dtype):
    backend, device = backend_device
    skip_unsupported(backend, device, dtype)
    x0, x1, g, t = make_path(6, (37,), degree, dtype, device, seed=degree)
    outs = bk.bezier(x0, x1, t, g, orders=(0, 1, 2), backend=backend)
    _check_outputs(outs, reference64(x0, x1, g, t, (0, 1, 2)), dtype, (0, 1, 2), 6, (37,))
    # t = 0 and t = 1 give P_0 and P_n exactly
    assert torch.equal(outs[0][0], x0[0]) and torch.equal(outs[0][1], x1[1])


@pytest.mark.parametrize("orders", ORDER_SETS, ids=str)
def test_every_order_subset(backend_device, orders):
    backend, device = backend_device
    x0, x1, g, t = make_path(5, (3, 4), 5, torch.float32, device)
    outs = bk.bezier(x0, x1, t, g, orders=orders, backend=backend)
    _check_outputs(outs, reference64(x0, x1, g, t, orders), torch.float32, orders, 5, (3, 4))


@pytest.mark.parametrize("shape", [(1, (5,)), (0, (5,)), (4, ()), (3, (2, 3, 5)), (7, (1,)), (2, (0,)), (3, (1029,))],
                         ids=lambda s: f"B{s[0]}-F{s[1]}")
def test_edge_shapes(backend_device, shape):
    backend, device = backend_device
    batch, features = shape
    x0, x1, g, t = make_path(batch, features, 3, torch.float32, device)
    outs = bk.bezier(x0, x1, t, g, orders=(0, 1, 2), backend=backend)
    _check_outputs(outs, reference64(x0, x1, g, t, (0, 1, 2)), torch.float32, (0, 1, 2), batch, features)


@pytest.mark.parametrize("degree", [1, 2, 9])
def test_strided_guides_and_stacked(backend_device, degree):
    """Guides as a view of a stacked tensor, bezier_stacked, and non-contiguous features."""
    backend, device = backend_device
    x0, x1, g, t = make_path(4, (2, 9), degree, torch.float32, device, stacked=True)
    if g is not None:
        assert not g.is_contiguous()
    ref = reference64(x0, x1, g, t, (0, 1, 2))
    _check_outputs(bk.bezier(x0, x1, t, g, orders=(0, 1, 2), backend=backend), ref, torch.float32, (0, 1, 2), 4, (2, 9))
    stacked = torch.stack([x0] + ([] if g is None else list(g.unbind(1))) + [x1], dim=1)
    outs = bk.bezier_stacked(stacked, t, orders=(0, 1, 2), backend=backend)
    _check_outputs(outs, ref, torch.float32, (0, 1, 2), 4, (2, 9))
    # features transposed (not unit stride): evaluated through a copy, same values
    xt0, xt1 = x0.transpose(1, 2), x1.transpose(1, 2)
    gt = None if g is None else g.transpose(2, 3)
    ref_t = reference64(xt0, xt1, gt, t, (0, 1))
    _check_outputs(bk.bezier(xt0, xt1, t, gt, backend=backend), ref_t, torch.float32, (0, 1), 4, (9, 2))


@pytest.mark.parametrize("t_dtype", [torch.float64, torch.float16, torch.bfloat16], ids=str)
def test_time_in_any_floating_dtype(backend_device, t_dtype):
    backend, device = backend_device
    x0, x1, g, t = make_path(5, (6,), 4, torch.float32, device, t_dtype=t_dtype)
    outs = bk.bezier(x0, x1, t, g, orders=(0, 1), backend=backend)
    _check_outputs(outs, reference64(x0, x1, g, t, (0, 1)), torch.float32, (0, 1), 5, (6,))


def test_extrapolation_outside_unit_interval(backend_device):
    backend, device = backend_device
    x0, x1, g, t = make_path(4, (8,), 3, torch.float64, device, t_dtype=torch.float64)
    t = torch.tensor([-0.5, 1.5, 2.0, -1.0], dtype=torch.float64, device=device)
    outs = bk.bezier(x0, x1, t, g, orders=(0, 1, 2), backend=backend)
    _check_outputs(outs, reference64(x0, x1, g, t, (0, 1, 2)), torch.float64, (0, 1, 2), 4, (8,))


def test_linear_precision_closed_form(backend_device):
    """Control points evenly spaced on a segment: B(t) = a + t (b - a), B' = b - a, B'' = 0."""
    backend, device = backend_device
    n = 6
    a, b = torch.randn(3, 5, dtype=torch.float64), torch.randn(3, 5, dtype=torch.float64)
    frac = torch.arange(n + 1, dtype=torch.float64) / n
    P = (a[:, None] + frac[None, :, None] * (b - a)[:, None]).to(device)
    t = torch.tensor([0.1, 0.5, 0.77], dtype=torch.float64, device=device)
    pos, vel, acc = bk.bezier_stacked(P, t, orders=(0, 1, 2), backend=backend)
    expect = (a + t.cpu()[:, None] * (b - a))
    assert torch.allclose(pos.cpu(), expect, atol=1e-13)
    assert torch.allclose(vel.cpu(), b - a, atol=1e-12)
    assert torch.allclose(acc.cpu(), torch.zeros_like(acc.cpu()), atol=1e-11)


def test_nan_and_inf_propagate(backend_device):
    backend, device = backend_device
    x0, x1, g, t = make_path(4, (5,), 3, torch.float32, device)
    x0[2, 3] = float("nan")
    x1[3, 1] = float("inf")
    t[1] = float("nan")
    pos, vel = bk.bezier(x0, x1, t, g, backend=backend)
    for out in (pos, vel):
        assert torch.isnan(out[2, 3]) and torch.isnan(out[1]).all()
        assert not torch.isfinite(out[3, 1])
        assert torch.isfinite(out[0]).all() and torch.isfinite(out[2, [0, 1, 2, 4]]).all()


# ----------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("orders", [(0,), (1,), (2,), (0, 1, 2)], ids=str)
@pytest.mark.parametrize("degree", [1, 2, 5])
def test_path_gradcheck(backend_device, degree, orders):
    backend, device = backend_device
    features = (2,) if interpreted(backend, device) else (2, 3)  # every element costs two interpreted calls
    x0, x1, g, t = make_path(3, features, degree, torch.float64, device, t_dtype=torch.float64, endpoints=False)
    inputs = [x0, x1, t] + ([g] if g is not None else [])
    for x in inputs:
        x.requires_grad_(True)

    def f(x0, x1, t, g=None):
        return bk.bezier(x0, x1, t, g, orders=orders, backend=backend)

    assert gradcheck(f, tuple(inputs), backend, device)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_path_gradients_match_reference(backend_device, dtype):
    """Gradients of a random projection of every output, for every input, per dtype."""
    backend, device = backend_device
    skip_unsupported(backend, device, dtype)
    t_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    x0, x1, g, t = make_path(5, (19,), 4, dtype, device, stacked=True, t_dtype=t_dtype)
    leaves = [x.detach().clone().requires_grad_(True) for x in (x0, x1, g, t)]
    leaves64 = [x.detach().double().requires_grad_(True) for x in (x0, x1, g, t)]
    proj = [torch.randn(5, 19, dtype=torch.float64, device=device) for _ in range(3)]

    def objective(x0, x1, g, t, backend):
        outs = bk.bezier(x0, x1, t, g, orders=(0, 1, 2), backend=backend)
        return sum((o.double() * p).sum() for o, p in zip(outs, proj))

    got = torch.autograd.grad(objective(*leaves, backend), leaves)
    ref = torch.autograd.grad(objective(*leaves64, "torch"), leaves64)
    for name, a, b in zip(("x0", "x1", "guides", "t"), got, ref):
        assert a.dtype == (dtype if name != "t" else t_dtype)
        assert rel_err(a, b) <= 2 * TOLERANCE[dtype], (name, rel_err(a, b))


# ----------------------------------------------------------------------------- the fused loss
LOSS_KINDS = [(tg, ls) for tg in ("velocity", "endpoint") for ls in ("mse", "pseudo_huber")]


@pytest.mark.parametrize("target,loss", LOSS_KINDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("degree", [1, 3, 16, 64])
def test_loss_matches_float64_reference(backend_device, target, loss, dtype, degree):
    backend, device = backend_device
    skip_unsupported(backend, device, dtype)
    x0, x1, g, t = make_path(6, (21,), degree, dtype, device, seed=degree)
    pred = torch.randn(6, 21, dtype=torch.float64).to(device=device, dtype=dtype)
    got = bk.bezier_distill_loss(pred, x0, x1, t, g, target=target, loss=loss, reduction="none", backend=backend)
    g64 = None if g is None else g.double()
    ref = reference.bezier_distill_loss(pred.double(), x0.double(), x1.double(), t.double(), g64, target=target,
                                        loss=loss, reduction="none")
    assert got.dtype == dtype and got.shape == (6,)
    assert rel_err(got, ref) <= TOLERANCE[dtype], rel_err(got, ref)


@pytest.mark.parametrize("target,loss", LOSS_KINDS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
def test_loss_gradcheck(backend_device, target, loss, reduction, weighted):
    backend, device = backend_device
    features = (2,) if interpreted(backend, device) else (2, 2)  # every element costs two interpreted calls
    x0, x1, g, t = make_path(3, features, 3, torch.float64, device, t_dtype=torch.float64, endpoints=False)
    pred = torch.randn((3,) + features, dtype=torch.float64, device=device)
    weight = torch.rand(3, dtype=torch.float64, device=device) if weighted else None
    inputs = tuple(x.requires_grad_(True) for x in (pred, x0, x1, g, t))
    huber_c = 0.5 if loss == "pseudo_huber" else None  # a c of the residuals' size keeps gradcheck well conditioned

    def f(pred, x0, x1, g, t):
        return bk.bezier_distill_loss(pred, x0, x1, t, g, target=target, loss=loss, huber_c=huber_c,
                                      weight=weight, reduction=reduction, backend=backend)

    assert gradcheck(f, inputs, backend, device)


@pytest.mark.parametrize("target,loss", LOSS_KINDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_loss_gradients_match_reference(backend_device, target, loss, dtype):
    backend, device = backend_device
    skip_unsupported(backend, device, dtype)
    t_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    x0, x1, g, t = make_path(7, (33,), 3, dtype, device, stacked=True, seed=3, t_dtype=t_dtype)
    pred = torch.randn(7, 33, dtype=torch.float64).to(device=device, dtype=dtype)
    weight = torch.rand(7, device=device)
    leaves = [x.detach().clone().requires_grad_(True) for x in (pred, x0, x1, g, t)]
    leaves64 = [x.detach().double().requires_grad_(True) for x in (pred, x0, x1, g, t)]
    got = torch.autograd.grad(bk.bezier_distill_loss(*leaves[:3], leaves[4], leaves[3], target=target, loss=loss,
                                                     weight=weight, backend=backend), leaves)
    ref = torch.autograd.grad(bk.bezier_distill_loss(*leaves64[:3], leaves64[4], leaves64[3], target=target, loss=loss,
                                                     weight=weight.double(), backend="torch"), leaves64)
    for name, a, b in zip(("pred", "x0", "x1", "guides", "t"), got, ref):
        assert rel_err(a, b) <= 2 * TOLERANCE[dtype], (name, rel_err(a, b))


@pytest.mark.parametrize("target,loss", LOSS_KINDS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("features", [(2,), (2, 9), (1030,)], ids=str)
def test_loss_student_gradients(backend_device, target, loss, reduction, dtype, features):
    """The distillation step's case: gradients reach pred, t and weight only (the kernel writes dL/dpred
    directly), under an upstream gradient that is 1, a scalar, or one value per sample. Features: the
    small-D kernels, one tile per sample, and several tiles per sample (partial sums, then a finish)."""
    backend, device = backend_device
    skip_unsupported(backend, device, dtype)
    t_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    x0, x1, g, t = make_path(11, features, 3, dtype, device, t_dtype=t_dtype, seed=5)
    pred = torch.randn((11,) + features, dtype=torch.float64).to(device=device, dtype=dtype)
    weight = torch.rand(11, device=device, dtype=t_dtype)
    upstreams = [None, torch.tensor(2.5, device=device)] if reduction != "none" else [torch.rand(11, device=device)]
    for upstream in upstreams:
        leaves = [x.detach().clone().requires_grad_(True) for x in (pred, t, weight)]
        leaves64 = [x.detach().double().requires_grad_(True) for x in (pred, t, weight)]
        got_loss = bk.bezier_distill_loss(leaves[0], x0, x1, leaves[1], g, target=target, loss=loss,
                                          weight=leaves[2], reduction=reduction, backend=backend)
        ref_loss = bk.bezier_distill_loss(leaves64[0], x0.double(), x1.double(), leaves64[1], g.double(),
                                          target=target, loss=loss, weight=leaves64[2], reduction=reduction,
                                          backend="torch")
        assert rel_err(got_loss.detach(), ref_loss.detach()) <= TOLERANCE[dtype]
        up = upstream if upstream is None else upstream.to(got_loss.dtype)
        got = torch.autograd.grad(got_loss, leaves, up)
        ref = torch.autograd.grad(ref_loss, leaves64, None if upstream is None else upstream.double())
        for name, a, b in zip(("pred", "t", "weight"), got, ref):
            assert a.dtype == leaves[("pred", "t", "weight").index(name)].dtype
            assert rel_err(a, b) <= 2 * TOLERANCE[dtype], (name, upstream, rel_err(a, b))


def test_loss_backward_twice(backend_device):
    """retain_graph: a second backward gives the right gradients or raises; never a wrong answer.
    (The fused loss's backward may scale its saved gradient in place.)"""
    backend, device = backend_device
    x0, x1, g, t = make_path(5, (7,), 2, torch.float32, device)
    pred = torch.randn(5, 7, device=device, requires_grad=True)
    (ref,) = torch.autograd.grad(bk.bezier_distill_loss(pred, x0, x1, t, g, backend="torch"), pred)
    for scale in (1.0, 3.0):
        pred.grad = None
        loss = bk.bezier_distill_loss(pred, x0, x1, t, g, backend=backend) * scale
        loss.backward(retain_graph=True)
        torch.testing.assert_close(pred.grad, scale * ref, rtol=1e-5, atol=1e-7)
        try:
            loss.backward()
        except RuntimeError as error:
            assert "modified by an inplace operation" in str(error)
        else:
            torch.testing.assert_close(pred.grad, 2 * scale * ref, rtol=1e-5, atol=1e-7)


def test_loss_defaults_equal_mse_loss(backend_device):
    backend, device = backend_device
    x0, x1, g, t = make_path(8, (4, 3), 2, torch.float32, device)
    pred = torch.randn(8, 4, 3, device=device)
    (vel,) = bk.bezier(x0, x1, t, g, orders=(1,), backend="torch")
    got = bk.bezier_distill_loss(pred, x0, x1, t, g, backend=backend)
    torch.testing.assert_close(got, torch.nn.functional.mse_loss(pred, vel), rtol=1e-5, atol=1e-7)


def test_loss_edge_shapes(backend_device):
    backend, device = backend_device
    for batch, features in ((1, (3,)), (0, (3,)), (5, (1,)), (4, (2, 513))):
        x0, x1, g, t = make_path(batch, features, 2, torch.float32, device)
        pred = torch.randn((batch,) + features, device=device)
        for reduction in ("none", "sum", "mean"):
            got = bk.bezier_distill_loss(pred, x0, x1, t, g, loss="pseudo_huber", reduction=reduction, backend=backend)
            ref = reference.bezier_distill_loss(pred.double(), x0.double(), x1.double(), t.double(), g.double(),
                                                loss="pseudo_huber", reduction=reduction)
            assert got.shape == ref.shape
            if batch == 0 and reduction == "mean":
                assert torch.isnan(got)  # the mean of nothing, as torch.mean
            else:
                assert rel_err(got, ref) <= TOLERANCE[torch.float32]


def test_loss_nan_propagates(backend_device):
    backend, device = backend_device
    x0, x1, g, t = make_path(4, (5,), 2, torch.float32, device)
    pred = torch.randn(4, 5, device=device, requires_grad=True)
    x1 = x1.clone()
    x1[2, 0] = float("nan")
    per_sample = bk.bezier_distill_loss(pred, x0, x1, t, g, reduction="none", backend=backend)
    assert torch.isnan(per_sample[2]) and torch.isfinite(per_sample[[0, 1, 3]]).all()
    per_sample.sum().backward()
    assert torch.isnan(pred.grad[2, 0]) and torch.isfinite(pred.grad[[0, 1, 3]]).all()


@pytest.mark.parametrize("used", [(0,), (1,), (2,), (0, 2)], ids=str)
def test_gradients_when_only_some_outputs_are_used(backend_device, used):
    """Outputs nobody uses get no gradient; the others' gradients are still exact."""
    backend, device = backend_device
    x0, x1, g, t = make_path(4, (6,), 3, torch.float64, device, t_dtype=torch.float64)
    leaves = [x.detach().clone().requires_grad_(True) for x in (x0, x1, g, t)]
    leaves64 = [x.detach().clone().requires_grad_(True) for x in (x0, x1, g, t)]
    outs = bk.bezier(leaves[0], leaves[1], leaves[3], leaves[2], orders=(0, 1, 2), backend=backend)
    refs = bk.bezier(leaves64[0], leaves64[1], leaves64[3], leaves64[2], orders=(0, 1, 2), backend="torch")
    got = torch.autograd.grad(sum(outs[k].sum() * (k + 1) for k in used), leaves)
    ref = torch.autograd.grad(sum(refs[k].sum() * (k + 1) for k in used), leaves64)
    for a, b in zip(got, ref):
        assert rel_err(a, b) <= 1e-12


@pytest.mark.parametrize("loss", ["mse", "pseudo_huber"])
@pytest.mark.parametrize("target", ["velocity", "endpoint"])
def test_the_loss_of_no_features_is_the_references(backend_device, target, loss):
    """D = 0: the value is the reference's (NaN, mse's mean over nothing; 0 for pseudo-Huber, whose c
    is 0 too) and so are the gradients: t's is 0 (no features, no gradient, where 2 / D and 1 / root
    are inf), the weights' l_b / B (NaN for mse)."""
    backend, device = backend_device
    x0, x1, g, t = make_path(5, (0,), 3, torch.float64, device, t_dtype=torch.float64)
    weight = torch.rand(5, dtype=torch.float64, device=device) + 0.5

    def value_and_grads(name):
        pred, tt, w = (x.detach().clone().requires_grad_(True) for x in (x0, t, weight))
        value = bk.bezier_distill_loss(pred, x0, x1, tt, g, weight=w, target=target, loss=loss, backend=name)
        return (value, *torch.autograd.grad(value, [pred, tt, w]))

    got, ref = value_and_grads(backend), value_and_grads("torch")
    assert torch.count_nonzero(ref[2]) == 0
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, equal_nan=True)


def test_empty_guides_get_a_gradient_of_their_shape(backend_device):
    """Degree 1 given as empty guides [B, 0, D] that need gradients: the path's and the loss's backward
    hand back [B, 0, D] (path_bwd returns [0] for 'no guides'), as the reference does."""
    backend, device = backend_device
    x0, x1, _, t = make_path(4, (3,), 1, torch.float64, device, t_dtype=torch.float64)
    empty = torch.zeros(4, 0, 3, dtype=torch.float64, device=device, requires_grad=True)
    pred = torch.randn(4, 3, dtype=torch.float64, device=device)
    (pos,) = bk.bezier(x0, x1, t, empty, orders=(0,), backend=backend)
    (g_path,) = torch.autograd.grad(pos.sum(), [empty])
    loss = bk.bezier_distill_loss(pred, x0, x1, t, empty, backend=backend)
    (g_loss,) = torch.autograd.grad(loss, [empty])
    assert g_path.shape == g_loss.shape == (4, 0, 3)
