"""Peak extra memory of one call: the most bytes it held at once beyond what was live before it.

CUDA: torch.cuda.max_memory_allocated() after reset_peak_memory_stats(), minus the bytes
allocated before the call (the live inputs), i.e. the caching allocator's count of tensor bytes.

CPU: there is no allocator counter, so the call runs once under torch.profiler with
profile_memory=True, which records every allocation and free of the c10 CPU allocator (all tensor
storage, from any thread, including inductor-generated code). The events are ordered by time and
summed; the peak of that running sum is the extra memory. It counts tensor bytes only (not
Python objects, thread stacks or glibc's own bookkeeping), like the CUDA figure. Frees of tensors
that were live before the call (e.g. an old .grad) make the running sum dip below zero; the peak
is still measured from the starting level.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch.profiler import ProfilerActivity, profile

from .timing import synchronize


def _cpu_peak_extra_bytes(fn: Callable, inputs: object) -> int:
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn(inputs)
    events = [e for e in prof.profiler.kineto_results.events()
              if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU]
    running = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        running += event.nbytes()
        peak = max(peak, running)
    return peak


def peak_extra_bytes(fn: Callable, inputs: object, device: torch.device) -> int:
    """Peak bytes allocated by fn(inputs) beyond those live when it starts (see module docstring)."""
    if device.type != "cuda":
        return _cpu_peak_extra_bytes(fn, inputs)
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    fn(inputs)
    synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before
