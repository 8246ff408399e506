"""Triton backend checks the backend matrix (test_ops.py) does not cover: the weights the kernels
compute against the reference, features split over several programs and looped within one, many samples
per program, how many kernel variants the launchers can ask for, and how the backend registers
itself where it cannot run."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import bezier_kernels as bk
from bezier_kernels import reference

from kernel_cases import make_path, reference64, rel_err

triton_ops = pytest.importorskip("bezier_kernels.triton_ops", reason="triton is not installed")
TRITON = bk.available_backends()["triton"]
DEVICE = TRITON.devices[0] if TRITON.available else "cpu"
runs_here = pytest.mark.skipif(not TRITON.available, reason=f"triton backend: {TRITON.reason}")


@runs_here
@pytest.mark.parametrize("degree", [1, 2, 3, 5, 16, 33, 64])
def test_weights_in_kernels_match_reference(degree):
    """The weights the kernels compute in their point loops, read off with the control points
    P_i = e_i (unit vectors: B^(k)(t) = w_k(t)), against reference.bernstein_weights: orders 0..2
    from the forward, order 3 (the backward's dB''/dt) from dL/dt; t in [0, 1], outside it and NaN;
    t = 0 and t = 1 give P_0 and P_n exactly."""
    t = torch.tensor([0.0, 1.0, 0.3, 0.71, 0.999, -0.5, 1.5, float("nan")], dtype=torch.float64, device=DEVICE)
    B, finite = t.shape[0], torch.isfinite(t)
    P = torch.eye(degree + 1, dtype=torch.float64, device=DEVICE).expand(B, -1, -1).contiguous()
    x0, x1, guides = P[:, 0], P[:, degree], P[:, 1:degree] if degree > 1 else None
    kernels = bk.backends.kernel_ops("triton")
    outs = kernels.path_fwd(x0, x1, guides, t, [0, 1, 2])
    for k, got in enumerate(outs):
        ref = reference.bernstein_weights(t, degree, k)
        assert rel_err(got[finite], ref[finite]) <= 1e-13, (k, rel_err(got[finite], ref[finite]))
        torch.testing.assert_close(got[~finite].cpu(), ref[~finite].cpu(), equal_nan=True)  # NaN, or 0 past n
    unit = torch.eye(degree + 1, dtype=torch.float64, device=DEVICE)
    assert torch.equal(outs[0][0], unit[0]) and torch.equal(outs[0][1], unit[degree])
    g = torch.randn(B, degree + 1, dtype=torch.float64, device=DEVICE)
    gt = kernels.path_bwd([g], x0, x1, guides, t, [2], False, True)[3]
    ref = (g * reference.bernstein_weights(t, degree, 3)).sum(dim=1)
    assert rel_err(gt[finite], ref[finite]) <= 1e-13, rel_err(gt[finite], ref[finite])
    # float32 weights are the float64 ones rounded (the kernels accumulate in float32)
    (vel32,) = kernels.path_fwd(x0.float(), x1.float(), None if guides is None else guides.float(), t, [1])
    assert rel_err(vel32[finite].double(), outs[1][finite]) <= 1e-6


def _compare_with_reference(batch, features, degree):
    """Path outputs, the four loss kinds, and every gradient, float64, against the reference."""
    x0, x1, g, t = make_path(batch, (features,), degree, torch.float64, DEVICE, stacked=True, t_dtype=torch.float64)
    outs = bk.bezier(x0, x1, t, g, orders=(0, 1, 2), backend="triton")
    for out, ref in zip(outs, reference64(x0, x1, g, t, (0, 1, 2))):
        assert rel_err(out, ref) <= 1e-12
    pred = torch.randn(batch, features, dtype=torch.float64, device=DEVICE)
    proj = torch.randn(3, batch, features, dtype=torch.float64, device=DEVICE)
    for target, loss in [(tg, ls) for tg in ("velocity", "endpoint") for ls in ("mse", "pseudo_huber")]:
        grads = {}
        for backend in ("triton", "torch"):
            leaves = [x.detach().clone().requires_grad_(True) for x in (pred, x0, x1, g, t)]
            per_sample = bk.bezier_distill_loss(leaves[0], leaves[1], leaves[2], leaves[4], leaves[3], target=target,
                                                loss=loss, reduction="none", backend=backend)
            path = bk.bezier(*leaves[1:3], leaves[4], leaves[3], orders=(0, 1, 2), backend=backend)
            objective = per_sample.sum() + sum((o * p).sum() for o, p in zip(path, proj))
            grads[backend] = (per_sample, *torch.autograd.grad(objective, leaves))
        for name, a, b in zip(("loss", "pred", "x0", "x1", "guides", "t"), grads["triton"], grads["torch"]):
            assert rel_err(a, b) <= 1e-12, (target, loss, name, rel_err(a, b))


@runs_here
@pytest.mark.parametrize("batch,features", [(5, 70), (3, 1)])
def test_feature_blocks_split_and_looped(monkeypatch, batch, features):
    """16-element tiles and at most 2 feature programs: D = 70 gives 5 blocks per sample, looped
    3 + 2 by the two programs, whose partial sums (loss, dL/dt) are added in order; D = 1 is the
    one-feature tile (16 samples per program)."""
    monkeypatch.setattr(triton_ops, "_TILE", 16)
    monkeypatch.setattr(triton_ops, "_MAX_FEATURE_PROGRAMS", 2)
    assert triton_ops._grid(5, 70) == (1, 16, 5, 2)
    _compare_with_reference(batch, features, 4)


@runs_here
def test_many_samples_per_program(monkeypatch):
    """D = 3 in 16-element tiles: 4 samples per program, the last program partly past B = 10."""
    monkeypatch.setattr(triton_ops, "_TILE", 16)
    assert triton_ops._grid(10, 3) == (4, 4, 3, 1)
    _compare_with_reference(10, 3, 3)


def test_kernel_variants_are_bounded():
    """The kernels' block sizes depend on D only (11 shapes, never on the degree or the orders)."""
    tiles = {triton_ops._tile(d) for d in range(0, 5000)}
    assert len(tiles) == 11 and all(b * d <= triton_ops._TILE and b <= triton_ops._MAX_BLOCK_B for b, d in tiles)


def _compiled_triton_env() -> dict:
    return {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}


def test_registration_without_gpu_or_interpreter():
    """Without CUDA and without TRITON_INTERPRET the ops are registered as on a GPU: triton_op with
    the shared fake kernels and every kernel found for torch.compile's cache keys, and
    torch.compile(fullgraph=True, dynamic=True) traces through their bodies to the kernels (the
    graph is not run: there is no GPU). The backend says why it is off."""
    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    # OPDEFS and get_triton_kernels_for_op are torch's records of custom ops and of the kernels
    # triton_op found in their bodies
    code = """
import torch, bezier_kernels as bk
from bezier_kernels import backends, ops
from torch._functorch.aot_autograd import aot_module_simplified
from torch._higher_order_ops.triton_kernel_wrap import kernel_side_table
from torch._library.custom_ops import OPDEFS
from torch._library.triton import get_triton_kernels_for_op
info = bk.available_backends()["triton"]
assert not info.available and "TRITON_INTERPRET=1" in info.reason, info
fakes = {"triton_path_fwd": ops._path_fwd_fake, "triton_path_bwd": ops._path_bwd_fake,
         "triton_loss_fwd": ops._loss_fwd_fake, "triton_fused_loss": ops._fused_loss_fake}
found = set()
for name, fake in fakes.items():
    assert OPDEFS["bezier_kernels::" + name]._abstract_fn is fake, name
    found |= {k.fn.__name__ for k in get_triton_kernels_for_op("bezier_kernels::" + name)}
print("found", *sorted(found))

class Traced(Exception):
    pass

def backend(gm, example_inputs):
    def compiler(graph, inputs):
        launched = [kernel_side_table.get_kernel(node.kwargs["kernel_idx"]).fn.__name__
                    for node in graph.graph.nodes if "triton_kernel_wrapper" in str(node.target)]
        symbolic = [node for node in graph.graph.nodes
                    if node.op == "placeholder" and not hasattr(node.meta.get("val"), "shape")]
        print("traced", len(symbolic) > 0, *launched)
        raise Traced
    return aot_module_simplified(gm, example_inputs, fw_compiler=compiler)

kernels = backends.kernel_ops("triton")
def step(x0, x1, guides, t, pred):
    pos, vel = kernels.path_fwd(x0, x1, guides, t, [0, 1])
    w = torch.ones_like(t, dtype=torch.float64)
    loss = kernels.loss_fwd(pred, x0, x1, guides, t, w, w, "endpoint", "pseudo_huber", 0.3)[0]
    return loss, kernels.path_bwd([pos, vel], x0, x1, guides, t, [0, 1], True, True)

P = torch.randn(6, 4, 3000)
try:
    compiled = torch.compile(step, backend=backend, fullgraph=True, dynamic=True)
    compiled(P[:, 0], P[:, 3], P[:, 1:3], torch.rand(6), torch.randn(6, 3000))
except Exception as error:
    assert "Traced" in repr(error), error
"""
    run = subprocess.run([sys.executable, "-c", code], env=_compiled_triton_env(), capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-4000:]
    lines = {line.split()[0]: line.split()[1:] for line in run.stdout.splitlines()}
    assert lines["found"] == ["_loss_finish_kernel", "_loss_fwd_kernel", "_path_bwd_kernel", "_path_fwd_kernel",
                              "_scale_rows_kernel", "_sum_kernel"]
    assert lines["traced"] == ["True", "_path_fwd_kernel", "_loss_fwd_kernel", "_loss_finish_kernel",
                               "_path_bwd_kernel"]


@pytest.mark.slow
def test_kernels_compile_for_a_gpu():
    """Every kernel variant of tests/triton_gpu_compile.py compiles for sm_90 (no GPU needed) without
    register spills, and contiguous float32 tiles move in 128-bit loads and stores."""
    pytest.importorskip("triton.backends.nvidia.compiler", reason="triton without its NVIDIA backend")
    script = Path(__file__).with_name("triton_gpu_compile.py")
    run = subprocess.run([sys.executable, str(script)], env=_compiled_triton_env(), capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-4000:]
    records = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    assert {r["kernel"] for r in records} == {"_path_fwd_kernel", "_path_bwd_kernel", "_loss_fwd_kernel",
                                              "_loss_finish_kernel", "_scale_rows_kernel", "_sum_kernel"}
    for r in records:
        assert r["spill_bytes"] == 0, r
        if r["case"] == "float32-contiguous" and r["kernel"] not in ("_loss_finish_kernel", "_sum_kernel"):
            assert r["v4_stores"] > 0 or r["constexprs"].get("POINTS_GRAD") == "False", r
            assert r["v4_loads"] > 0, r


@pytest.mark.slow
@pytest.mark.gpu
def test_more_than_2_31_elements_on_gpu():
    """64-bit offsets on the GPU: a bfloat16 path of 2^31 + 2^20 elements, checked at the far end."""
    if DEVICE != "cuda":
        pytest.skip("needs the triton backend on a CUDA device (2^31 elements are out of the interpreter's reach)")
    D = 4096
    B = (2**31 + 2**20) // D
    rows = torch.arange(B + 1, device=DEVICE).remainder_(241).to(torch.bfloat16)[:, None]
    cols = torch.arange(D, device=DEVICE).remainder_(13).to(torch.bfloat16)[None, :]
    storage = rows + cols  # small integers, exact in bfloat16
    x0, x1 = storage[:B], storage[1:]
    t = torch.full((B,), 0.5, device=DEVICE)
    (pos,) = bk.bezier(x0, x1, t, orders=(0,), backend="triton")
    assert pos.numel() > 2**31
    for part in (slice(0, 4), slice(B // 2, B // 2 + 4), slice(B - 4, B)):
        expect = 0.5 * (x0[part].float() + x1[part].float())
        assert torch.equal(pos[part].float(), expect.to(torch.bfloat16).float()), part
