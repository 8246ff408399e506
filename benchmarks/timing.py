"""Timing helpers shared by the benchmarks: warmed-up medians with rotated inputs.

On the CPU: wall-clock of each call after warm-up, over `repeats` calls cycling through several
independent input sets so that caches do not flatter small sizes. On CUDA: device events around
each call. Returns every sample, so callers report min / median / max.
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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable, input_sets: Sequence[tuple], *, repeats: int = 15, warmup: int = 3,
              device: torch.device = torch.device("cpu")) -> Timing:
    """Times fn(*inputs) for inputs cycling over input_sets."""
    for i in range(warmup):
        fn(*input_sets[i % len(input_sets)])
    _sync(device)
    samples = []
    for i in range(repeats):
        args = input_sets[i % len(input_sets)]
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn(*args)
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn(*args)
            samples.append((time.perf_counter() - t0) * 1e3)
    return Timing(tuple(samples))
