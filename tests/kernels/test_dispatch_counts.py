"""Operators and kernel launches per call (docs/spec.md section 6), counted with benchmarks/dispatch.py.

Each limit is the count measured when it was set: a test fails when a change makes an op dispatch
more, so the host path stays a handful of operators (issue 18). Not timing: counts only.
"""
from __future__ import annotations

import pytest
import torch

import bezier_kernels as bk
from benchmarks.dispatch import cuda_kernels, operators, triton_launches

from kernel_cases import make_path

B, D, N = 8, 4, 3


def _calls(backend: str, device: str) -> dict:
    x0, x1, g, t = make_path(B, (D,), N, torch.float32, device)
    pred = torch.randn_like(x0, requires_grad=True)
    pred_fixed = pred.detach()
    leaves = [x0.clone().requires_grad_(True), t.clone().requires_grad_(True)]
    grads = [torch.randn_like(x0), torch.randn_like(x0)]

    def path():
        return bk.bezier(x0, x1, t, g, backend=backend)

    def path_fwd_bwd():
        out = bk.bezier(leaves[0], x1, leaves[1], g, backend=backend)
        torch.autograd.grad(out, leaves, grads)

    def loss():
        return bk.bezier_distill_loss(pred_fixed, x0, x1, t, g, backend=backend)

    def loss_fwd_bwd(target="velocity", kind="mse"):
        def run():
            pred.grad = None
            bk.bezier_distill_loss(pred, x0, x1, t, g, target=target, loss=kind, backend=backend).backward()
        return run

    return {"path": path, "path_fwd_bwd": path_fwd_bwd, "loss": loss, "loss_fwd_bwd": loss_fwd_bwd(),
            "loss_fwd_bwd_huber": loss_fwd_bwd("endpoint", "pseudo_huber")}


# cpp, float32 [B, D]: the op and its outputs' allocations; backward: the engine's seed gradient
# (ones_like, 4 operators), AccumulateGrad's detach, and for the path the kernel op and its outputs
CPP_OPERATORS = {"path": 3, "path_fwd_bwd": 11, "loss": 6, "loss_fwd_bwd": 11, "loss_fwd_bwd_huber": 11}
# kernel launches: Triton (one kernel per op, weights computed inside it; the loss: its kernel, row
# weights and factors inside, and the fixed-order sum of a "mean"; a finish kernel only with several
# feature programs per sample) and CUDA (the same design: weights, row weights, dr/dpred and the
# output's factor inside the kernels, dL/dt written in t's dtype; the loss: its kernel and the
# single-block sum of a "mean"; backward: the engine's seed gradient and dL/dpred's one multiplication).
# The CUDA limits follow from the launchers (csrc/bezier_cuda_*.cu) and await their first GPU run.
TRITON_LAUNCHES = {"path": 1, "path_fwd_bwd": 2, "loss": 2, "loss_fwd_bwd": 2, "loss_fwd_bwd_huber": 2}
CUDA_LAUNCHES = {"path": 1, "path_fwd_bwd": 2, "loss": 2, "loss_fwd_bwd": 4, "loss_fwd_bwd_huber": 4}


def _available(backend: str, device: str) -> None:
    info = bk.available_backends()[backend]
    if not info.available or device not in info.devices:
        pytest.skip(f"{backend} on {device}: {info.reason}")


@pytest.mark.parametrize("call", list(CPP_OPERATORS))
def test_cpp_operators_per_call(call):
    _available("cpp", "cpu")
    names = operators(_calls("cpp", "cpu")[call])
    assert len(names) <= CPP_OPERATORS[call], names


def test_fused_loss_is_cheaper_than_the_reference():
    """The fused loss forward+backward dispatches far fewer operators than the eager reference."""
    _available("cpp", "cpu")
    fused = len(operators(_calls("cpp", "cpu")["loss_fwd_bwd"]))
    reference = len(operators(_calls("torch", "cpu")["loss_fwd_bwd"]))
    assert 3 * fused < reference, (fused, reference)


@pytest.mark.parametrize("call", list(TRITON_LAUNCHES))
def test_triton_launches_per_call(call):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    _available("triton", device)
    fn = _calls("triton", device)[call]
    fn()
    with triton_launches() as launched:
        fn()
    assert len(launched) <= TRITON_LAUNCHES[call], launched


@pytest.mark.parametrize("call", list(CUDA_LAUNCHES))
def test_cuda_launches_per_call(call):
    _available("cuda", "cuda")
    names = cuda_kernels(_calls("cuda", "cuda")[call])
    assert len(names) <= CUDA_LAUNCHES[call], names
