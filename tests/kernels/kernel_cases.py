"""Shared helpers of the kernel tests: the (backend, device) matrix, input builders and the
accuracy metric of docs/spec.md (section 4).

Every available backend is tested on every device it runs on here; an unavailable combination
shows up as a skip carrying available_backends()'s reason, never as a pass.
"""
from __future__ import annotations

import pytest
import torch

import bezier_kernels as bk
from bezier_kernels import reference

# docs/spec.md section 4: ||out - ref|| / ||ref|| against a float64 evaluation of the same inputs.
TOLERANCE = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}
DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
DEVICES = ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",)


def interpreted(backend: str, device: str) -> bool:
    """Triton on the CPU runs in the Triton interpreter: exact, but slow (small shapes there)."""
    return backend == "triton" and device == "cpu"


def gradcheck(fn, inputs, backend: str, device: str) -> bool:
    """torch.autograd.gradcheck in float64: the whole Jacobian, except in the Triton interpreter, where
    every call is slow and fast mode compares a random projection u^T J v with its finite difference
    instead (two calls per output rather than two per input element)."""
    return torch.autograd.gradcheck(fn, inputs, fast_mode=interpreted(backend, device))


def backend_cases(fused_only: bool = False):
    """pytest params "backend-device" for every backend and device, skipped where it cannot run."""
    info = bk.available_backends()
    cases = []
    for name in bk.BACKENDS:
        if fused_only and name == "torch":
            continue
        for device in ("cpu", "cuda"):
            marks = []
            if device == "cuda" and not torch.cuda.is_available():
                marks.append(pytest.mark.skip(reason="no CUDA device"))
            elif not info[name].available or (name != "torch" and device not in info[name].devices):
                marks.append(pytest.mark.skip(reason=f"{name} on {device}: {info[name].reason}"))
            cases.append(pytest.param((name, device), id=f"{name}-{device}", marks=marks))
    return cases


def supports_dtype(backend: str, device: str, dtype: torch.dtype) -> bool:
    """The Triton interpreter (CPU) has no bfloat16, and its float16 is not the GPU's: GPU only."""
    return not (interpreted(backend, device) and dtype in (torch.float16, torch.bfloat16))


def skip_unsupported(backend: str, device: str, dtype: torch.dtype) -> None:
    if not supports_dtype(backend, device, dtype):
        pytest.skip(f"{dtype} on {backend}-{device}: the Triton interpreter runs float32/float64 only (GPU-only dtype)")


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref||, or the absolute error when ref is all zeros (or empty)."""
    diff = (out.double().cpu() - ref.double().cpu()).norm().item()
    scale = ref.double().norm().item()
    return diff / scale if scale > 0 else diff


def make_path(batch: int, features: tuple[int, ...], degree: int, dtype: torch.dtype, device: str, *,
              stacked: bool = False, endpoints: bool = True, t_dtype: torch.dtype = torch.float32, seed: int = 0):
    """Random control points and times. stacked=True returns x0, x1, guides as views of one
    [B, n+1, *F] tensor (strided guides); endpoints=True puts t = 0 and t = 1 in the batch."""
    gen = torch.Generator().manual_seed(seed)
    P = torch.randn((batch, degree + 1) + tuple(features), generator=gen, dtype=torch.float64)
    t = torch.rand(batch, generator=gen, dtype=torch.float64)
    if endpoints and batch >= 3:
        t[0], t[1] = 0.0, 1.0
    P = P.to(device=device, dtype=dtype)
    t = t.to(device=device, dtype=t_dtype)
    if stacked:
        x0, x1, guides = P[:, 0], P[:, degree], (P[:, 1:degree] if degree > 1 else None)
    else:
        x0, x1 = P[:, 0].clone(), P[:, degree].clone()
        guides = P[:, 1:degree].clone() if degree > 1 else None
    return x0, x1, guides, t


def reference64(x0, x1, guides, t, orders):
    """Float64 ground truth of the same (rounded) inputs."""
    g = None if guides is None else guides.double()
    return reference.bezier(x0.double(), x1.double(), t.double(), g, orders=orders)
