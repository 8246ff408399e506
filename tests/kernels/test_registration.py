"""Custom-op registration (opcheck), torch.compile without graph breaks, backend selection, and
64-bit offsets."""
from __future__ import annotations

import pytest
import torch

import bezier_kernels as bk
from bezier_kernels import backends

from kernel_cases import make_path


def _op_args(device, dtype=torch.float64, degree=3, batch=3, features=5):
    x0, x1, g, t = make_path(batch, (features,), degree, dtype, device, t_dtype=dtype, endpoints=False)
    return x0, x1, g, t


@pytest.mark.parametrize("degree", [1, 4])
def test_opcheck(fused_backend_device, degree):
    backend, device = fused_backend_device
    ops = backends.kernel_ops(backend)
    x0, x1, g, t = _op_args(device, degree=degree)
    grad_in = [x.clone().requires_grad_(True) for x in (x0, x1, t)]
    gg = None if g is None else g.clone().requires_grad_(True)
    pred = torch.randn_like(x0, requires_grad=True)
    samples = [
        (ops.path_fwd, (grad_in[0], grad_in[1], gg, grad_in[2], [0, 1, 2])),
        (ops.path_fwd, (x0, x1, g, t, [1])),
        (ops.path_bwd, ([torch.randn_like(x0), torch.randn_like(x0)], x0, x1, g, t, [2, 0], True, True)),
        (ops.path_bwd, ([torch.randn_like(x0)], x0, x1, g, t, [1], False, True)),
        # loss_fwd is forward-only (fused_loss is the loss with autograd)
        (ops.loss_fwd, (pred.detach(), x0, x1, g, t, torch.rand_like(t), None, "velocity", "mse", 0.0)),
        (ops.loss_fwd, (pred.detach(), x0, x1, g, t, torch.rand_like(t), torch.rand_like(t), "endpoint",
                        "pseudo_huber", 0.3)),
    ]
    weight = torch.rand(x0.shape[0], dtype=x0.dtype, device=device, requires_grad=True)
    for target, loss, reduction, residual, t_grad, wt in (
            ("velocity", "mse", "mean", False, False, None), ("endpoint", "pseudo_huber", "none", False, True, weight),
            ("velocity", "pseudo_huber", "sum", True, True, weight), ("endpoint", "mse", "mean", True, False, None)):
        points = (grad_in[0], grad_in[1], gg) if residual else (x0, x1, g)
        samples.append((ops.fused_loss, (pred, *points, grad_in[2] if t_grad else t, wt, target, loss, 0.2,
                                         reduction, residual, t_grad)))
    for op, args in samples:
        torch.library.opcheck(op, args)


def test_fused_loss_upstream_gradient(fused_backend_device):
    """The loss's backward for an upstream gradient other than 1 (its fast path returns the saved
    gradient for exactly 1): every input's gradient scales with it, for every reduction."""
    backend, device = fused_backend_device
    x0, x1, g, t = _op_args(device, degree=3, batch=4, features=3)
    for reduction in ("mean", "sum", "none"):
        for target, loss in (("velocity", "mse"), ("endpoint", "pseudo_huber")):
            inputs = [torch.randn_like(x0), x0, x1, g, t, torch.rand_like(t)]
            inputs = [x.clone().requires_grad_(True) for x in inputs]
            pred, a, b, c, tt, w = inputs

            def grads(scale):
                value = bk.bezier_distill_loss(pred, a, b, tt, c, target=target, loss=loss, weight=w,
                                               reduction=reduction, backend=backend)
                upstream = torch.full_like(value, scale)
                return torch.autograd.grad(value, inputs, upstream)

            def reference_grads():
                value = bk.bezier_distill_loss(pred, a, b, tt, c, target=target, loss=loss, weight=w,
                                               reduction=reduction, backend="torch")
                return torch.autograd.grad(value, inputs, torch.full_like(value, 2.5))

            for got, want, one in zip(grads(2.5), reference_grads(), grads(1.0)):
                torch.testing.assert_close(got, want)
                torch.testing.assert_close(got, 2.5 * one)
            # only pred needs a gradient: the kernel writes dL/dpred itself (residual=False). A graph per
            # upstream: the eager backward scales its saved buffer in place (a second backward through the
            # same graph raises, test_ops.test_loss_backward_twice), on CUDA also for an upstream of 1
            for up in (1.0, -0.5):
                value, ref = (bk.bezier_distill_loss(pred, x0, x1, t, g, target=target, loss=loss,
                                                     reduction=reduction, backend=name) for name in (backend, "torch"))
                (got,) = torch.autograd.grad(value, pred, torch.full_like(value, up))
                (want,) = torch.autograd.grad(ref, pred, torch.full_like(ref, up))
                torch.testing.assert_close(got, want)


@pytest.mark.slow
def test_compile_fullgraph_training_step(backend_device):
    """A student step (network, path, fused loss, backward) compiles to one graph and matches eager."""
    backend, device = backend_device
    torch._dynamo.reset()
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.SiLU(), torch.nn.Linear(16, 4)).to(device)
    x0, x1, g, t = make_path(8, (4,), 3, torch.float32, device)
    t.requires_grad_(True)

    def loss_fn(x0, x1, g, t):
        (xt,) = bk.bezier(x0, x1, t, g, orders=(0,), backend=backend)
        pred = net(torch.cat([xt, t[:, None]], dim=1))
        return bk.bezier_distill_loss(pred, x0, x1, t, g, loss="pseudo_huber", backend=backend)

    def step(fn):  # forward compiled as one graph, backward through AOTAutograd's compiled graph
        loss = fn(x0, x1, g, t)
        return loss, torch.autograd.grad(loss, [t] + list(net.parameters()))

    eager_loss, eager_grads = step(loss_fn)
    loss, grads = step(torch.compile(loss_fn, fullgraph=True))  # fullgraph: any graph break raises
    torch.testing.assert_close(loss, eager_loss, rtol=1e-5, atol=1e-6)
    for a, b in zip(grads, eager_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_available_backends_explains_itself():
    info = bk.available_backends()
    assert list(info) == list(bk.BACKENDS)
    assert info["torch"].available
    for name, entry in info.items():
        assert entry.name == name and entry.reason
        if not entry.available:
            assert entry.devices == () or name in ("cuda", "triton")
    if not torch.cuda.is_available():
        assert not info["cuda"].available and "CUDA" in info["cuda"].reason


def test_auto_and_environment_override(monkeypatch):
    cpu = torch.device("cpu")
    expected = "cpp" if bk.available_backends()["cpp"].available else "torch"
    assert backends.resolve_backend("auto", cpu, 3, "path") == expected
    assert backends.resolve_backend("auto", cpu, 65, "path") == "torch"
    monkeypatch.setenv("BEZIER_KERNELS_BACKEND", "torch")
    assert backends.resolve_backend("auto", cpu, 3, "loss") == "torch"
    assert backends.resolve_backend("cpp", cpu, 3, "loss") == "cpp" if expected == "cpp" else True
    monkeypatch.setenv("BEZIER_KERNELS_BACKEND", "cuda")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="cuda"):
            backends.resolve_backend("auto", cpu, 3, "path")


def test_cpp_respects_thread_count():
    """Results do not depend on torch.set_num_threads (fixed-order reductions)."""
    if not bk.available_backends()["cpp"].available:
        pytest.skip(bk.available_backends()["cpp"].reason)
    x0, x1, g, t = make_path(64, (700,), 5, torch.float32, "cpu")
    x0.requires_grad_(True)
    t.requires_grad_(True)
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, max(2, before)):
            torch.set_num_threads(threads)
            pos, vel = bk.bezier(x0, x1, t, g, backend="cpp")
            loss = bk.bezier_distill_loss(vel, x0, x1, t, g, loss="pseudo_huber", backend="cpp")
            results.append((pos, vel, loss, *torch.autograd.grad(loss + pos.sum(), [x0, t])))
    finally:
        torch.set_num_threads(before)
    for a, b in zip(*results):
        assert torch.equal(a, b)


@pytest.mark.slow
@pytest.mark.parametrize("backend,device", [("cpp", "cpu"), ("cuda", "cuda")], ids=["cpp-cpu", "cuda-cuda"])
def test_more_than_2_31_elements(backend, device):
    """64-bit offsets: a [B, D] bfloat16 path with 2^31 + 2^20 elements per tensor, checked at the far end."""
    info = bk.available_backends()[backend]
    if not info.available or device not in info.devices:
        pytest.skip(f"{backend} on {device}: {info.reason}")
    D = 4096
    B = (2**31 + 2**20) // D
    # x0 and x1 are overlapping row-shifted views of one buffer of small integers (exact in bf16)
    storage = torch.empty(B + 1, D, dtype=torch.bfloat16, device=device)
    rows = torch.arange(B + 1, device=device).remainder_(241).to(torch.bfloat16)[:, None]
    cols = torch.arange(D, device=device).remainder_(13).to(torch.bfloat16)[None, :]
    torch.add(rows, cols, out=storage)
    x0, x1 = storage[:B], storage[1:]
    t = torch.full((B,), 0.5, device=device)
    (pos,) = bk.bezier(x0, x1, t, orders=(0,), backend=backend)
    assert pos.numel() > 2**31
    for rows in (slice(0, 4), slice(B // 2, B // 2 + 4), slice(B - 4, B)):
        expect = 0.5 * (x0[rows].float() + x1[rows].float())
        assert torch.equal(pos[rows].float(), expect.to(torch.bfloat16).float()), rows


def test_package_works_without_the_extension():
    """With bezier_kernels._C unavailable, "torch" still works, "auto" uses it, and "cpp" says why."""
    import subprocess
    import sys

    code = """
import sys
sys.modules["bezier_kernels._C"] = None  # the import of the extension fails, as when it was never built
import torch, bezier_kernels as bk
info = bk.available_backends()
assert not info["cpp"].available and "pip install --no-build-isolation" in info["cpp"].reason, info["cpp"]
assert not info["cuda"].available
x0, x1, t = torch.randn(4, 3), torch.randn(4, 3), torch.rand(4)
pos, vel = bk.bezier(x0, x1, t)
assert torch.allclose(vel, x1 - x0)
try:
    bk.bezier(x0, x1, t, backend="cpp")
except ValueError as error:
    assert "not built" in str(error), error
else:
    raise AssertionError("backend='cpp' without the extension must raise")
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr
