"""The "cuda" backend's own paths, against the float64 reference: 16-byte chunks and element-wise
chunks, a short last chunk, many rows per block (sub-warp reductions), rows split over several
tiles (cross-tile sums), fixed-order reductions and the current stream. The shared backend
matrix (test_ops.py) and test_registration.py (opcheck, compile, 2^31 elements) cover the rest.
Runs only where the CUDA kernels are built and a CUDA device is visible; elsewhere every test is
skipped with available_backends()'s reason.
"""
from __future__ import annotations

import pytest
import torch

import bezier_kernels as bk

from kernel_cases import TOLERANCE, make_path, reference64, rel_err

CUDA = bk.available_backends()["cuda"]
pytestmark = pytest.mark.skipif(not CUDA.available, reason=f"cuda backend: {CUDA.reason}")

# (batch, features, stacked): aligned rows (16-byte chunks); odd rows (element-wise); one sample
# with a short last chunk; many short rows per block; rows split over several tiles (aligned and
# odd); a stacked tensor whose guides are strided views
LAYOUTS = [(6, 64, False), (6, 37, False), (1, 1003, False), (777, 5, False), (3, 40000, False),
           (2, 40001, False), (5, 96, True)]
LAYOUT_IDS = [f"B{b}-D{d}{'-stacked' if s else ''}" for b, d, s in LAYOUTS]


def _path_grads(backend, x0, x1, g, t, orders, grad_outputs):
    """Outputs of bezier and the gradients of sum_k <out_k, grad_outputs[k]> for x0, x1, t, guides."""
    leaves = [x.detach().clone().requires_grad_(True) for x in (x0, x1, t) + (() if g is None else (g,))]
    outs = bk.bezier(leaves[0], leaves[1], leaves[2], leaves[3] if g is not None else None, orders=orders,
                     backend=backend)
    total = sum((o * w.to(o.dtype)).sum() for o, w in zip(outs, grad_outputs))
    return outs, torch.autograd.grad(total, leaves)


@pytest.mark.parametrize("layout", LAYOUTS, ids=LAYOUT_IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("degree", [1, 3, 16])
def test_path_and_gradients(layout, dtype, degree):
    batch, features, stacked = layout
    x0, x1, g, t = make_path(batch, (features,), degree, dtype, "cuda", stacked=stacked, t_dtype=dtype, seed=degree)
    orders = (0, 1, 2)
    gen = torch.Generator(device="cuda").manual_seed(1)
    grad_outputs = [torch.randn(x0.shape, generator=gen, device="cuda", dtype=torch.float64) for _ in orders]
    outs, grads = _path_grads("cuda", x0, x1, g, t, orders, grad_outputs)
    g64 = None if g is None else g.double()
    refs, ref_grads = _path_grads("torch", x0.double(), x1.double(), g64, t.double(), orders, grad_outputs)
    tol = TOLERANCE[dtype] * (10 if dtype == torch.float32 else 1)  # gradients sum B*D terms into dt
    for out, ref in zip(outs, refs):
        assert rel_err(out, ref) <= TOLERANCE[dtype]
    for name, got, ref in zip(("x0", "x1", "t", "guides"), grads, ref_grads):
        assert rel_err(got, ref) <= tol, name


@pytest.mark.parametrize("layout", LAYOUTS, ids=LAYOUT_IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("target,loss", [("velocity", "mse"), ("endpoint", "pseudo_huber")])
def test_loss_values(layout, dtype, target, loss):
    batch, features, stacked = layout
    x0, x1, g, t = make_path(batch, (features,), 3, dtype, "cuda", stacked=stacked)
    pred = torch.randn(x0.shape, device="cuda").to(dtype)
    got = bk.bezier_distill_loss(pred, x0, x1, t, g, target=target, loss=loss, reduction="none", backend="cuda")
    g64 = None if g is None else g.double()
    ref = bk.bezier_distill_loss(pred.double(), x0.double(), x1.double(), t.double(), g64, target=target,
                                 loss=loss, reduction="none", backend="torch")
    assert rel_err(got, ref) <= TOLERANCE[dtype]


@pytest.mark.parametrize("layout", [(3, 40000, False), (777, 5, False)], ids=["multi-tile", "many-rows"])
def test_reductions_are_deterministic(layout):
    """Same inputs, same bits: per-sample sums (dt, loss) reduce in a fixed order."""
    batch, features, _ = layout
    x0, x1, g, t = make_path(batch, (features,), 5, torch.float32, "cuda")
    pred = torch.randn(x0.shape, device="cuda")
    results = []
    for _ in range(2):
        tt = t.clone().requires_grad_(True)
        (pos,) = bk.bezier(x0, x1, tt, g, orders=(0,), backend="cuda")
        loss = bk.bezier_distill_loss(pred, x0, x1, tt, g, loss="pseudo_huber", reduction="sum", backend="cuda")
        results.append((loss.detach(), *torch.autograd.grad(loss + pos.sum(), [tt])))
    for a, b in zip(*results):
        assert torch.equal(a, b)


def test_runs_on_the_current_stream():
    """An input produced late on a side stream is read correctly only by kernels queued behind it there."""
    x0, x1, g, t = make_path(64, (1000,), 3, torch.float32, "cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        torch.cuda._sleep(50_000_000)  # a few ms of busy side stream before x0_late is written
        x0_late = x0 + 0
        pos, vel = bk.bezier(x0_late, x1, t, g, backend="cuda")
    torch.cuda.current_stream().wait_stream(side)
    ref = reference64(x0, x1, g, t, (0, 1))
    assert rel_err(pos, ref[0]) <= 1e-5 and rel_err(vel, ref[1]) <= 1e-5
