"""docs/spec.md section 5: bad input raises a clear error, naming the argument, before any kernel runs."""
from __future__ import annotations

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

import bezier_kernels as bk

B, D, N = 4, 3, 3


def good():
    return dict(x0=torch.randn(B, D), x1=torch.randn(B, D), t=torch.rand(B), guides=torch.randn(B, N - 1, D))


def call_path(backend, **changes):
    a = {**good(), **changes}
    orders = a.pop("orders", (0, 1))
    return bk.bezier(a["x0"], a["x1"], a["t"], a["guides"], orders=orders, backend=backend)


def call_loss(backend, **changes):
    a = {**good(), "pred": torch.randn(B, D), **changes}
    kw = {k: a.pop(k) for k in ("target", "loss", "huber_c", "weight", "reduction") if k in a}
    return bk.bezier_distill_loss(a["pred"], a["x0"], a["x1"], a["t"], a["guides"], backend=backend, **kw)


PATH_CASES = [
    ("x0", dict(x0=[[0.0] * D] * B), TypeError),
    ("x0", dict(x0=torch.ones(B, D, dtype=torch.int64)), TypeError),
    ("x0", dict(x0=torch.randn(B, D, dtype=torch.complex64)), TypeError),
    ("x0", dict(x0=torch.tensor(1.0)), ValueError),
    ("x1", dict(x1=torch.randn(B, D + 1)), ValueError),
    ("x1", dict(x1=torch.randn(B, D, dtype=torch.float64)), TypeError),
    ("x1", dict(x1=torch.randn(B, D, device="meta")), ValueError),
    ("t", dict(t=torch.rand(B, 1)), ValueError),
    ("t", dict(t=torch.rand(B + 1)), ValueError),
    ("t", dict(t=torch.tensor(0.5)), ValueError),
    ("t", dict(t=torch.ones(B, dtype=torch.int32)), TypeError),
    ("t", dict(t=torch.rand(B, device="meta")), ValueError),
    ("guides", dict(guides=torch.randn(B + 1, N - 1, D)), ValueError),
    ("guides", dict(guides=torch.randn(B, N - 1, D + 2)), ValueError),
    ("guides", dict(guides=torch.randn(B, D)), ValueError),
    ("guides", dict(guides=torch.randn(B, N - 1, D, dtype=torch.float16)), TypeError),
    ("guides", dict(guides=torch.ones(B, N - 1, D, dtype=torch.int8)), TypeError),
    ("guides", dict(guides=torch.randn(B, 1000, D)), ValueError),  # degree 1001
    ("orders", dict(orders=(3,)), ValueError),
    ("orders", dict(orders=()), ValueError),
    ("orders", dict(orders=(0, 0)), ValueError),
    ("orders", dict(orders=(1.0,)), ValueError),
    ("orders", dict(orders="01"), TypeError),
]

LOSS_CASES = [
    ("pred", dict(pred=torch.randn(B, D + 1)), ValueError),
    ("pred", dict(pred=torch.randn(B, D, dtype=torch.float64)), TypeError),
    ("pred", dict(pred=torch.ones(B, D, dtype=torch.int64)), TypeError),
    ("target", dict(target="position"), ValueError),
    ("loss", dict(loss="l1"), ValueError),
    ("reduction", dict(reduction="max"), ValueError),
    ("huber_c", dict(loss="pseudo_huber", huber_c=-1.0), ValueError),
    ("huber_c", dict(loss="mse", huber_c=0.1), ValueError),
    ("weight", dict(weight=torch.rand(B + 1)), ValueError),
    ("weight", dict(weight=torch.ones(B, dtype=torch.int64)), TypeError),
]


def _launched_ops(prof) -> list[str]:
    return [e.name for e in prof.events() if "bezier_kernels::" in e.name]


@pytest.mark.parametrize("name,changes,error", PATH_CASES, ids=lambda v: v if isinstance(v, str) else "")
def test_path_bad_input(backend_device, name, changes, error):
    backend, device = backend_device
    if device != "cpu":
        pytest.skip("the checks are device independent; run once on the CPU")
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        with pytest.raises(error, match=name):
            call_path(backend, **changes)
    assert _launched_ops(prof) == []


@pytest.mark.parametrize("name,changes,error", LOSS_CASES + PATH_CASES[:18],
                         ids=lambda v: v if isinstance(v, str) else "")
def test_loss_bad_input(backend_device, name, changes, error):
    backend, device = backend_device
    if device != "cpu":
        pytest.skip("the checks are device independent; run once on the CPU")
    changes = {k: v for k, v in changes.items() if k != "orders"}
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        with pytest.raises(error, match=name):
            call_loss(backend, **changes)
    assert _launched_ops(prof) == []


def test_stacked_bad_input():
    with pytest.raises(ValueError, match="P"):
        bk.bezier_stacked(torch.randn(B, 1, D), torch.rand(B))  # one control point: no path
    with pytest.raises(ValueError, match="P"):
        bk.bezier_stacked(torch.randn(B), torch.rand(B))
    with pytest.raises(ValueError, match="t"):
        bk.bezier_stacked(torch.randn(B, 3, D), torch.rand(B + 2))
    with pytest.raises(TypeError, match="P"):
        bk.bezier_stacked(torch.ones(B, 3, D, dtype=torch.int32), torch.rand(B))


def test_bernstein_weights_bad_input():
    with pytest.raises(ValueError, match="n"):
        bk.bernstein_weights(torch.rand(3), 0)
    with pytest.raises(ValueError, match="order"):
        bk.bernstein_weights(torch.rand(3), 2, order=-1)
    with pytest.raises(ValueError, match="t"):
        bk.bernstein_weights(torch.rand(3, 2), 2)
    with pytest.raises(TypeError, match="t"):
        bk.bernstein_weights(torch.ones(3, dtype=torch.int64), 2)


def test_backend_names_and_devices(monkeypatch):
    a = good()
    with pytest.raises(ValueError, match="backend"):
        bk.bezier(a["x0"], a["x1"], a["t"], backend="numpy")
    with pytest.raises(ValueError, match="backend 'cuda' cannot run on cpu"):
        bk.bezier(a["x0"], a["x1"], a["t"], backend="cuda")
    monkeypatch.setenv("BEZIER_KERNELS_BACKEND", "fortran")
    with pytest.raises(ValueError, match="BEZIER_KERNELS_BACKEND"):
        bk.bezier(a["x0"], a["x1"], a["t"])


def test_fused_backends_reject_degree_past_64(fused_backend_device):
    backend, device = fused_backend_device
    x0, x1 = torch.randn(2, 3, device=device), torch.randn(2, 3, device=device)
    guides, t = torch.randn(2, 64, 3, device=device), torch.rand(2, device=device)
    with pytest.raises(ValueError, match="degree"):
        bk.bezier(x0, x1, t, guides, backend=backend)
    # "auto" falls back to the reference above the kernels' range
    (pos,) = bk.bezier(x0, x1, t, guides, orders=(0,))
    assert pos.shape == (2, 3)


# ---------------------------------------------------------------- the compiled fast path of the checks

def _fast_shape(**changes):
    from bezier_kernels import _validate

    a = {**good(), "pred": torch.randn(B, D), "weight": None, **changes}
    return _validate._CALL_SHAPE(a["x0"], a["x1"], a["t"], a["guides"], a["pred"], a["weight"],
                                 bk.reference.MAX_REFERENCE_DEGREE)


def _needs_fast_path():
    from bezier_kernels import _validate

    if _validate._CALL_SHAPE is None:
        pytest.skip("the C++ extension is not built (pip install --no-build-isolation -e .)")


@pytest.mark.parametrize("name,changes,error", LOSS_CASES + PATH_CASES[:18],
                         ids=lambda v: v if isinstance(v, str) else "")
def test_the_compiled_fast_path_accepts_no_bad_input(name, changes, error):
    """Every input the Python checks reject, the extension's call_shape declines (None: the full checks then raise)."""
    _needs_fast_path()
    tensors = {k: v for k, v in changes.items() if k in ("x0", "x1", "t", "guides", "pred", "weight")}
    if tensors:
        assert _fast_shape(**tensors) is None


VALID = [
    dict(),
    dict(guides=None),
    dict(guides=torch.randn(B, 0, D)),
    dict(weight=torch.rand(B, dtype=torch.float64)),
    dict(x0=torch.randn(B, 2, 5), x1=torch.randn(B, 2, 5), guides=torch.randn(B, N - 1, 2, 5),
         pred=torch.randn(B, 2, 5)),
    dict(x0=torch.randn(0, D), x1=torch.randn(0, D), t=torch.rand(0), guides=torch.randn(0, 1, D),
         pred=torch.randn(0, D)),
    dict(x0=torch.randn(B, D, dtype=torch.float64), x1=torch.randn(B, D, dtype=torch.float64), guides=None,
         pred=torch.randn(B, D, dtype=torch.float64), t=torch.rand(B, dtype=torch.float64)),
    dict(x0=torch.randn(B, 2 * D)[:, ::2], guides=torch.randn(B, 5, D).transpose(0, 1).contiguous().transpose(0, 1)),
]


@pytest.mark.parametrize("changes", VALID)
def test_the_compiled_fast_path_gives_the_python_checks_shape(changes):
    from bezier_kernels import _validate

    _needs_fast_path()
    a = {**good(), "pred": torch.randn(B, D), "weight": None, **changes}
    if "x0" in changes and "x1" not in changes:
        a["x1"] = torch.randn_like(a["x0"])
    expected = _validate._check_path(a["x0"], a["x1"], a["t"], a["guides"])
    _validate.check_loss(a["pred"], a["x0"], expected, "velocity", "mse", None, a["weight"], "mean")
    found = _validate._CALL_SHAPE(a["x0"], a["x1"], a["t"], a["guides"], a["pred"], a["weight"],
                                  bk.reference.MAX_REFERENCE_DEGREE)
    assert found is not None and _validate.PathShape(*found) == expected
    # a tensor subclass is declined (it may override what is read; nn.Parameter is not such a subclass) and
    # accepted by the Python checks
    sub = torch.randn(B, D).as_subclass(_Subclass)
    assert _fast_shape(pred=sub) is None and _fast_shape(pred=torch.nn.Parameter(torch.randn(B, D))) is not None
    shape = _validate.check_loss_call(sub, *(good()[k] for k in ("x0", "x1", "t")), good()["guides"], "velocity",
                                      "mse", None, None, "mean")
    assert shape == _validate.PathShape(B, (D,), N)


class _Subclass(torch.Tensor):
    pass


# ---------------------------------------------------------------- the compiled fast path of the loss call

@pytest.mark.parametrize("layout", ["flat", "strided-x0", "features-2x5", "column-pred"])
@pytest.mark.parametrize("needs", ["pred", "pred+t+weight", "points"])
def test_the_loss_fast_path_is_the_op_call(fused_backend_device, layout, needs):
    """bezier_distill_loss calls its backend's fused loss through the extension's fused_loss_value when
    every tensor is flat already (else it returns None and the wrapper reshapes): the same value and
    gradients as calling the op from Python, residual and t_grad decided from requires_grad alike."""
    from bezier_kernels import backends, functional

    backend, device = fused_backend_device
    if functional._FUSED_LOSS_VALUE is None:
        pytest.skip("the C++ extension is not built (pip install --no-build-isolation -e .)")
    gen = torch.Generator().manual_seed(1)

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64).to(device)

    shape = (6, 2, 5) if layout == "features-2x5" else (6, 10)
    x0, x1, pred, guides = randn(*shape), randn(*shape), randn(*shape), randn(6, 2, *shape[1:])
    if layout == "strided-x0":
        x0 = randn(6, 20)[:, ::2]
    if layout == "column-pred":
        pred = randn(10, 6).T
    t, weight = torch.rand(6, generator=gen, dtype=torch.float64).to(device), randn(6).abs()
    grads = {"pred": (pred,), "pred+t+weight": (pred, t, weight), "points": (pred, x0, guides)}[needs]
    results = []
    for route in ("fast", "op"):
        leaves = {id(x): x.detach().clone().requires_grad_(True) for x in grads}
        p, a, b, g, tt, w = (leaves.get(id(x), x) for x in (pred, x0, x1, guides, t, weight))
        args = (backend, p, a, b, g, tt, w, "endpoint", "pseudo_huber", 0.3, "sum")
        flat = all(x.dim() == (3 if x is g else 2) and x.stride(-1) == 1 for x in (p, a, b, g))
        if route == "fast":
            value = functional._FUSED_LOSS_VALUE(*args)
            if not flat:
                assert value is None
                return
        else:
            residual = any(x.requires_grad for x in (a, b, g))
            value = backends.kernel_ops(backend).fused_loss(p, a, b, g, tt, w, *args[7:], residual,
                                                             tt.requires_grad)[0]
        results.append((value.detach(), torch.autograd.grad(value, list(leaves.values()))))
    (fast, fast_grads), (op, op_grads) = results
    assert torch.equal(fast, op)
    for a, b in zip(fast_grads, op_grads):
        assert torch.equal(a, b)


def test_the_loss_fast_path_declines_what_it_cannot_take():
    from bezier_kernels import functional

    if functional._FUSED_LOSS_VALUE is None:
        pytest.skip("the C++ extension is not built (pip install --no-build-isolation -e .)")
    x = torch.randn(4, 3)
    t = torch.rand(4)
    assert functional._FUSED_LOSS_VALUE("fortran", x, x, x, None, t, None, "velocity", "mse", 0.0, "mean") is None
    sub = torch.randn(4, 3).as_subclass(_Subclass)
    assert functional._FUSED_LOSS_VALUE("cpp", sub, x, x, None, t, None, "velocity", "mse", 0.0, "mean") is None
    value = functional._FUSED_LOSS_VALUE("cpp", x, x, x, None, t, None, "velocity", "mse", 0.0, "mean")
    torch.testing.assert_close(value, bk.bezier_distill_loss(x, x, x, t, backend="torch"))


def test_the_loss_fast_path_leaves_function_modes_to_the_python_call():
    """Under a TorchFunctionMode the loss goes through the Python op call, which the mode sees."""
    from torch.overrides import TorchFunctionMode

    from bezier_kernels import functional

    if functional._FUSED_LOSS_VALUE is None:
        pytest.skip("the C++ extension is not built (pip install --no-build-isolation -e .)")
    seen = []

    class Record(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            seen.append(str(func))
            return func(*args, **(kwargs or {}))

    x, t = torch.randn(4, 3), torch.rand(4)
    with Record():
        assert functional._FUSED_LOSS_VALUE("cpp", x, x, x, None, t, None, "velocity", "mse", 0.0, "mean") is None
        value = bk.bezier_distill_loss(x, x, x, t, backend="cpp")
    assert any("fused_loss" in name for name in seen), seen
    torch.testing.assert_close(value, bk.bezier_distill_loss(x, x, x, t, backend="torch"))
