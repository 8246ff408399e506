"""Timing helpers shared by the benchmarks: warmed-up medians with rotated inputs.

On the CPU: wall-clock of each call after warm-up, over `repeats` calls cycling through several
independent input sets so that caches do not flatter small sizes. On CUDA: device events around
each call (the median of the per-call event times, like triton.testing.do_bench's "median").
Every sample is kept, so callers report min / median / max.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch


@dataclass(frozen=True)
class Timing:
    samples_ms: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.samples_ms)

    @property
    def min(self) -> float:
        return min(self.samples_ms)

    @property
    def max(self) -> float:
        return max(self.samples_ms)


def past(deadline: float | None) -> bool:
    """Whether time.perf_counter() has passed deadline (never, for None): a time-limited sweep starts no new case."""
    return deadline is not None and time.perf_counter() > deadline


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def first_call_ms(fn: Callable, inputs: object, device: torch.device) -> float:
    """Wall-clock of one call, finished on the device: the first call's compile and warm-up cost."""
    synchronize(device)
    start = time.perf_counter()
    fn(inputs)
    synchronize(device)
    return (time.perf_counter() - start) * 1e3


def _time_one(fn: Callable, args: object, device: torch.device) -> float:
    """Milliseconds of one call: device events on CUDA, wall-clock on the CPU."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn(args)
        end.record()
        end.synchronize()
        return start.elapsed_time(end)
    t0 = time.perf_counter()
    fn(args)
    return (time.perf_counter() - t0) * 1e3


def time_call(fn: Callable, inputs: Sequence, *, repeats: int = 15, warmup: int = 3,
              device: torch.device = torch.device("cpu")) -> Timing:
    """Times fn(inputs[i]) for i cycling over the input sets, after `warmup` untimed calls."""
    for i in range(warmup):
        fn(inputs[i % len(inputs)])
    synchronize(device)
    return Timing(tuple(_time_one(fn, inputs[i % len(inputs)], device) for i in range(repeats)))


def time_interleaved(fns: dict[str, Callable], inputs: Sequence, *, repeats: int = 300, warmup: int = 10,
                     device: torch.device = torch.device("cpu")) -> dict[str, Timing]:
    """Like time_call for several providers at once, call by call in turn (each repeat times every
    provider on the same input set), so load from elsewhere falls on all of them alike: for ratios
    at small sizes, where one call takes microseconds."""
    for i in range(warmup):
        for fn in fns.values():
            fn(inputs[i % len(inputs)])
    synchronize(device)
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for i in range(repeats):
        for name, fn in fns.items():
            samples[name].append(_time_one(fn, inputs[i % len(inputs)], device))
    return {name: Timing(tuple(v)) for name, v in samples.items()}


@dataclass(frozen=True)
class CopyBandwidth:
    """dst.copy_(src) of `nbytes` on the device: GB/s counting the read and the write (2 * nbytes)."""

    nbytes: int
    timing: Timing

    @property
    def gbps(self) -> float:
        return 2 * self.nbytes / (self.timing.median * 1e-3) / 1e9

    @property
    def best_gbps(self) -> float:
        return 2 * self.nbytes / (self.timing.min * 1e-3) / 1e9


def copy_bandwidth(device: torch.device, nbytes: int, repeats: int = 20) -> CopyBandwidth:
    """Measures the device's copy bandwidth on preallocated buffers much larger than its caches."""
    numel = nbytes // 4
    src = torch.rand(numel, device=device)
    dst = torch.empty_like(src)
    timing = time_call(lambda _: dst.copy_(src), [None], repeats=repeats, warmup=3, device=device)
    return CopyBandwidth(numel * 4, timing)
