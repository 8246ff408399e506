"""Drop-in adapters for flow_matching and torchcfm (bezier_kernels.integrations).

Against the float64 reference on every backend; against the real libraries (installed by
`make setup` from PyPI) for their degree-1 paths, exactly; a short run of flow_matching's 2-D
training loop with the Bezier path swapped in, sampled with its own ODESolver; and the adapters
loaded with each library hidden, on their stand-in base classes.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

import bezier_kernels as bk
from bezier_kernels.integrations import BezierConditionalFlowMatcher, BezierProbPath

from kernel_cases import TOLERANCE, gradcheck, make_path, reference64, rel_err


def _assert_path(x_t, dx_t, x0, x1, guides, t):
    ref_x, ref_dx = reference64(x0, x1, guides, t, (0, 1))
    assert x_t.dtype == dx_t.dtype == x0.dtype and x_t.shape == dx_t.shape == x0.shape
    assert rel_err(x_t, ref_x) <= TOLERANCE[x0.dtype] and rel_err(dx_t, ref_dx) <= TOLERANCE[x0.dtype]


# ---- contract on every backend, against the float64 reference (no external library needed) ----

@pytest.mark.parametrize("degree", [1, 2, 3, 7])
def test_prob_path_sample_matches_reference(backend_device, degree):
    backend, device = backend_device
    x0, x1, g, t = make_path(6, (3, 4, 5), degree, torch.float32, device)
    s = BezierProbPath(backend=backend).sample(x_0=x0, x_1=x1, t=t, guides=g)
    assert s.x_0 is x0 and s.x_1 is x1 and s.t is t
    _assert_path(s.x_t, s.dx_t, x0, x1, g, t)
    # the same guides from a provider given at construction
    provided = BezierProbPath(lambda a, b: g, backend=backend).sample(x_0=x0, x_1=x1, t=t)
    assert torch.equal(provided.x_t, s.x_t) and torch.equal(provided.dx_t, s.dx_t)


@pytest.mark.parametrize("sigma", [0.0, 0.3])
def test_flow_matcher_matches_reference(backend_device, sigma):
    backend, device = backend_device
    x0, x1, g, t = make_path(6, (2, 5), 3, torch.float64, device, t_dtype=torch.float64)
    fm = BezierConditionalFlowMatcher(sigma, backend=backend)
    t_out, xt, ut, eps = fm.sample_location_and_conditional_flow(x0, x1, t, return_noise=True, guides=g)
    assert t_out is t and eps.shape == x0.shape
    _assert_path(xt - sigma * eps, ut, x0, x1, g, t)
    # the separate torchcfm methods give the same path
    provided = BezierConditionalFlowMatcher(sigma, lambda a, b: g, backend=backend)
    assert torch.equal(provided.sample_xt(x0, x1, t, eps), xt)
    _assert_path(provided.compute_mu_t(x0, x1, t), provided.compute_conditional_flow(x0, x1, t, xt), x0, x1, g, t)


def test_flow_matcher_draws_t_like_torchcfm():
    """t = None: uniform on [0, 1] in x0's dtype, drawn before epsilon from the global generator."""
    x0, x1 = torch.randn(500, 3, dtype=torch.float64), torch.randn(500, 3, dtype=torch.float64)
    torch.manual_seed(5)
    t, xt, ut, eps = BezierConditionalFlowMatcher(0.5).sample_location_and_conditional_flow(x0, x1, return_noise=True)
    torch.manual_seed(5)
    assert torch.equal(t, torch.rand(500).double()) and torch.equal(eps, torch.randn_like(x0))
    _assert_path(xt - 0.5 * eps, ut, x0, x1, None, t)


def test_guides_argument_wins_over_provider():
    x0, x1, g, t = make_path(4, (2,), 2, torch.float64, "cpu", t_dtype=torch.float64)
    calls = []
    path = BezierProbPath(lambda a, b: calls.append(1) or torch.zeros_like(g))
    s = path.sample(x_0=x0, x_1=x1, t=t, guides=g)
    assert not calls
    _assert_path(s.x_t, s.dx_t, x0, x1, g, t)


def test_midpoint_guide_is_the_straight_line():
    """Degree elevation: the quadratic through (x0 + x1) / 2 is the line (1-t) x0 + t x1, velocity x1 - x0."""
    x0, x1, _, t = make_path(64, (7,), 1, torch.float64, "cpu", t_dtype=torch.float64)
    s = BezierProbPath(lambda a, b: ((a + b) / 2).unsqueeze(1)).sample(x_0=x0, x_1=x1, t=t)
    torch.testing.assert_close(s.x_t, (1 - t[:, None]) * x0 + t[:, None] * x1, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(s.dx_t, x1 - x0, rtol=1e-14, atol=1e-14)


def test_gradients(backend_device):
    backend, device = backend_device
    x0, x1, g, t = make_path(3, (2, 3), 3, torch.float64, device, t_dtype=torch.float64, endpoints=False)
    inputs = tuple(x.requires_grad_(True) for x in (x0, x1, g, t))
    path = BezierProbPath(backend=backend)
    fm = BezierConditionalFlowMatcher(0.2, backend=backend)

    def prob_path(x0, x1, g, t):
        s = path.sample(x_0=x0, x_1=x1, t=t, guides=g)
        return s.x_t, s.dx_t

    def flow_matcher(x0, x1, g, t):
        torch.manual_seed(0)  # the same epsilon on every call
        return fm.sample_location_and_conditional_flow(x0, x1, t, guides=g)[1:]

    assert gradcheck(prob_path, inputs, backend, device)
    assert gradcheck(flow_matcher, inputs, backend, device)


@pytest.mark.slow
def test_compile_fullgraph(backend_device):
    """Both adapters, with a guide provider, inside one torch.compile(fullgraph=True) graph, equal to eager."""
    backend, device = backend_device
    torch._dynamo.reset()
    x0, x1, _, t = make_path(16, (2, 3), 1, torch.float32, device)
    def provider(a, b):  # a curved degree-3 path
        return torch.stack([0.7 * a + 0.3 * b + 0.2, 0.3 * a + 0.7 * b - 0.2 * a.flip(-1)], dim=1)

    path = BezierProbPath(provider, backend=backend)
    fm = BezierConditionalFlowMatcher(0.1, provider, backend=backend)

    def both(x0, x1, t):
        s = path.sample(x_0=x0, x_1=x1, t=t)
        _, xt, ut, eps = fm.sample_location_and_conditional_flow(x0, x1, t, return_noise=True)
        return s.x_t, s.dx_t, xt - 0.1 * eps, ut  # the noise differs under compile; the path must not

    eager = both(x0, x1, t)
    for out, ref in zip(torch.compile(both, fullgraph=True)(x0, x1, t), eager):
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(eager[2], eager[0], rtol=1e-6, atol=1e-6)


def test_bad_arguments():
    with pytest.raises(TypeError, match="guide_provider"):
        BezierProbPath(guide_provider="midpoint")
    with pytest.raises(TypeError, match="guide_provider"):
        BezierConditionalFlowMatcher(0.1, guide_provider=3)
    for sigma in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="sigma"):
            BezierConditionalFlowMatcher(sigma)
    for sigma in ("0.1", None, True, torch.tensor(0.1)):
        with pytest.raises(TypeError, match="sigma"):
            BezierConditionalFlowMatcher(sigma)
    x0, x1 = torch.randn(4, 2), torch.randn(4, 2)
    with pytest.raises(ValueError, match="t must have shape"):
        BezierProbPath().sample(x_0=x0, x_1=x1, t=torch.rand(3))
    with pytest.raises(ValueError, match="guides"):
        BezierConditionalFlowMatcher(0.0).sample_location_and_conditional_flow(x0, x1, guides=torch.randn(4, 1, 3))
    with pytest.raises(ValueError, match="backend"):
        BezierProbPath(backend="fortran").sample(x_0=x0, x_1=x1, t=torch.rand(4))


def _load_hiding(library: str, module: str, monkeypatch):
    """A fresh copy of bezier_kernels/integrations/<module>.py imported while `library` cannot be imported."""
    for name in list(sys.modules):
        if name == library or name.startswith(library + "."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, library, None)  # makes `import library` raise ImportError
    file = Path(bk.__file__).parent / "integrations" / f"{module}.py"
    spec = importlib.util.spec_from_file_location(f"_hidden_{library}_{module}", file)
    loaded = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, loaded)
    spec.loader.exec_module(loaded)
    return loaded


def test_works_without_the_libraries(monkeypatch):
    fm_module = _load_hiding("flow_matching", "flow_matching", monkeypatch)
    cfm_module = _load_hiding("torchcfm", "torchcfm", monkeypatch)
    assert not fm_module.HAVE_FLOW_MATCHING and not cfm_module.HAVE_TORCHCFM
    x0, x1, g, t = make_path(5, (4,), 2, torch.float32, "cpu")
    s = fm_module.BezierProbPath().sample(x_0=x0, x_1=x1, t=t, guides=g)
    assert type(s).__module__ == fm_module.__name__
    assert [f for f in s.__dataclass_fields__] == ["x_1", "x_0", "t", "x_t", "dx_t"]
    _assert_path(s.x_t, s.dx_t, x0, x1, g, t)
    matcher = cfm_module.BezierConditionalFlowMatcher(0.0)
    assert type(matcher).__mro__[1] is object
    t_out, xt, ut = matcher.sample_location_and_conditional_flow(x0, x1, t, guides=g)
    _assert_path(xt, ut, x0, x1, g, t)


# ---- the real libraries ----

# Backends that sum w0*x0 + w1*x1 with two roundings, as the libraries' eager code does, match them
# bit for bit; the GPU-style kernels (triton, cuda) fuse the multiply-add (one rounding) and match to
# within one rounding of the result.
BITWISE_BACKENDS = ("torch", "cpp")
# the skip reason where a library the adapters are tested against is absent (make setup installs both)
MISSING = {"flow_matching": "flow-matching not installed: pip install flow-matching==1.0.10",
           "torchcfm": "torchcfm not installed: pip install --no-deps torchcfm==1.0.7 POT"}


def _assert_same(ours: torch.Tensor, theirs: torch.Tensor, backend: str) -> None:
    if backend in BITWISE_BACKENDS:
        assert torch.equal(ours, theirs)
    else:
        eps = torch.finfo(theirs.dtype).eps
        torch.testing.assert_close(ours, theirs, rtol=eps, atol=eps * theirs.abs().max().item())

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("features", [(2,), (3, 8, 8)], ids=str)
def test_straight_path_equals_flow_matching_condot(backend_device, dtype, features):
    """No guides: the same x_t and dx_t as CondOTProbPath and AffineProbPath(CondOTScheduler())
    (bit for bit on BITWISE_BACKENDS, to one rounding with a fused multiply-add)."""
    fm_path = pytest.importorskip("flow_matching.path", reason=MISSING["flow_matching"])
    from flow_matching.path.scheduler import CondOTScheduler

    backend, device = backend_device
    x0, x1, _, _ = make_path(257, features, 1, dtype, device)
    t = torch.cat([torch.tensor([0.0, 1.0]), torch.rand(255)]).to(device)  # t as the library's loop draws it
    ours = BezierProbPath(backend=backend).sample(x_0=x0, x_1=x1, t=t)
    assert isinstance(BezierProbPath(), fm_path.ProbPath) and type(ours) is fm_path.PathSample
    for theirs in (fm_path.CondOTProbPath(), fm_path.AffineProbPath(CondOTScheduler())):
        ref = theirs.sample(x_0=x0, x_1=x1, t=t)
        _assert_same(ours.x_t, ref.x_t, backend)
        _assert_same(ours.dx_t, ref.dx_t, backend)


@pytest.mark.parametrize("sigma", [0.0, 0.25])
@pytest.mark.parametrize("given_t", [False, True])
def test_straight_path_equals_torchcfm(backend_device, sigma, given_t):
    """No guides: the same (t, x_t, u_t, eps) as torchcfm's ConditionalFlowMatcher from the same seed."""
    cfm = pytest.importorskip("torchcfm.conditional_flow_matching", reason=MISSING["torchcfm"])
    backend, device = backend_device
    x0, x1, _, t = make_path(129, (3, 5), 1, torch.float32, device)
    ours_fm, theirs_fm = BezierConditionalFlowMatcher(sigma, backend=backend), cfm.ConditionalFlowMatcher(sigma)
    assert isinstance(ours_fm, cfm.ConditionalFlowMatcher)
    results = []
    for matcher in (ours_fm, theirs_fm):
        torch.manual_seed(11)
        results.append(matcher.sample_location_and_conditional_flow(x0, x1, t if given_t else None, return_noise=True))
    for ours, theirs in zip(*results):
        _assert_same(ours, theirs, backend)
    _assert_same(ours_fm.compute_mu_t(x0, x1, t), theirs_fm.compute_mu_t(x0, x1, t), backend)


EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def examples(monkeypatch):
    """The examples/ folder importable (its scripts import their shared toy2d module by name)."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    return importlib.import_module


@pytest.fixture
def one_thread():
    """Small matrices gain nothing from more threads, and lose much on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_flow_matching_2d_training_loop_with_bezier_path(examples, one_thread):
    """flow_matching's 2-D example loop (examples/dropin_flow_matching.py: checkerboard, MLP, Adam),
    300 steps with CondOTProbPath, with BezierProbPath() and with a curved BezierProbPath, each sampled
    with flow_matching's ODESolver from the same noise."""
    fm_path = pytest.importorskip("flow_matching.path", reason=MISSING["flow_matching"])
    example, toy2d = examples("dropin_flow_matching"), examples("toy2d")
    steps = 300
    condot_vf, condot_losses = example.train(fm_path.CondOTProbPath(), steps)
    straight_vf, straight_losses = example.train(BezierProbPath(), steps)
    curved_vf, curved_losses = example.train(BezierProbPath(toy2d.bend_sideways), steps)
    torch.manual_seed(100)
    noise, held_out = torch.randn(3000, 2), toy2d.checkerboard(3000)
    condot_samples = example.sample(condot_vf, noise)

    # No guides: the fused path is CondOT bit for bit, so the whole run is the same run.
    assert straight_losses == condot_losses and torch.equal(example.sample(straight_vf, noise), condot_samples)

    # A curved degree-2 path trains as well. Its loss is a little higher (seeds 0-7: 1.02-1.04x): the
    # conditional velocity of a curved path varies more, so the least achievable loss is larger.
    def tail(losses):
        return sum(losses[-50:]) / 50

    assert tail(curved_losses) < 1.1 * tail(condot_losses), (tail(curved_losses), tail(condot_losses))
    # Sample quality: energy distance to held-out data, in units of the noise's own distance to it.
    # Seeds 0-7: CondOT 0.017-0.034, curved 0.019-0.036, curved / CondOT 0.87-1.23.
    untrained = toy2d.energy_distance(noise, held_out)
    condot = toy2d.energy_distance(condot_samples, held_out) / untrained
    curved = toy2d.energy_distance(example.sample(curved_vf, noise), held_out) / untrained
    assert condot < 0.08 and curved < 0.08, (condot, curved)
    assert curved < 1.5 * condot, (curved, condot)


@pytest.mark.parametrize("name", ["dropin_flow_matching", "dropin_torchcfm"])
def test_examples_run(examples, one_thread, name, capsys):
    module = name.removeprefix("dropin_")
    pytest.importorskip(module, reason=MISSING[module])
    quality = examples(name).main(steps=20)
    assert quality > 0 and "energy distance to the data" in capsys.readouterr().out
