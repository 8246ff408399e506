"""Operators and kernel launches per call (docs/spec.md section 6: "report the operators and kernel launches
each op dispatches per call").

    operators(fn)          the dispatcher operators one call of fn runs (torch.profiler, CPU activity):
                           every aten:: and custom op, nested ones included, not autograd-engine nodes
    cuda_kernels(fn)       the CUDA kernels one call launches (torch.profiler, CUDA activity; GPU only)
    triton_launches()      context manager: the Triton kernels launched through bezier_kernels.triton_ops
                           (on CUDA and under TRITON_INTERPRET=1), by name

Each counter calls fn once untimed first, so one-time work (autotuning, lazy init) is not counted.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
from torch.profiler import ProfilerActivity, profile

_ENGINE_PREFIXES = ("autograd::", "torch::autograd::", "<backward op>", "Optimizer.")


def _is_operator(name: str) -> bool:
    return "::" in name and not name.startswith(_ENGINE_PREFIXES)


def operators(fn: Callable[[], object]) -> list[str]:
    """Names of the operators one call of fn dispatches, in order."""
    fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return [e.name for e in prof.events() if _is_operator(e.name)]


def cuda_kernels(fn: Callable[[], object]) -> list[str]:
    """Names of the CUDA kernels one call of fn launches (synchronised before and after)."""
    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    kinds = {"cuda", "kernel"}
    return [e.name for e in prof.events()
            if str(getattr(e, "device_type", "")).lower().split(".")[-1] in kinds and not e.name.startswith("Memcpy")]


@contextlib.contextmanager
def triton_launches() -> Iterator[list[str]]:
    """Collects the name of every Triton kernel launched through triton_ops.wrap_triton meanwhile."""
    from bezier_kernels import triton_ops

    launched: list[str] = []
    original = triton_ops.wrap_triton

    class Counted:
        def __init__(self, kernel):
            self.kernel = kernel
            self.name = getattr(getattr(kernel, "fn", kernel), "__name__", repr(kernel))

        def __getitem__(self, grid):
            launch = original(self.kernel)[grid]

            def run(*args, **kwargs):
                launched.append(self.name)
                return launch(*args, **kwargs)

            return run

    triton_ops.wrap_triton = Counted
    try:
        yield launched
    finally:
        triton_ops.wrap_triton = original
