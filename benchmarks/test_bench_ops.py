"""pytest-benchmark suite: a representative subset of the sweep, for tracking regressions.

Not collected by `make test` (testpaths = tests). From the repository root:

    pytest benchmarks --benchmark-autosave                 # store this run under .benchmarks/
    pytest benchmarks --benchmark-compare                  # compare with the latest stored run
    pytest benchmarks --benchmark-compare --benchmark-compare-fail=median:10%   # fail on a 10% regression

Each benchmark rotates its input sets (setup picks the next one, untimed) and runs on the default
device (CUDA when present, with a synchronise inside the timed call). The providers are the eager
reference, every fused backend available here, and torch.compile of the reference for a few cases.
"""
from __future__ import annotations

import itertools

import pytest
import torch

from benchmarks.cases import OPS, fused_backends, make_input_sets, provider_call
from benchmarks.timing import synchronize
from benchmarks.train_step import TrainCase, make_step

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
BATCH, FEATURES = (16384, 1024) if DEVICE.type == "cuda" else (2048, 1024)
ROUNDS = 50 if DEVICE.type == "cuda" else 10
CASES = [("position+velocity", 1), ("position+velocity", 3), ("position+velocity", 16),
         ("position+velocity+acceleration", 3), ("loss_fwd:velocity:mse", 3),
         ("loss_fwd_bwd:velocity:mse", 1), ("loss_fwd_bwd:velocity:mse", 3), ("loss_fwd_bwd:endpoint:pseudo_huber", 3)]
COMPILED = {("position+velocity", 3), ("loss_fwd_bwd:velocity:mse", 3)}
PROVIDERS = ["eager", *fused_backends(DEVICE)]


def _params():
    for op, degree in CASES:
        for provider in PROVIDERS + (["compiled"] if (op, degree) in COMPILED else []):
            yield pytest.param(op, degree, provider, id=f"{op}-n{degree}-{provider}")


def _pedantic(benchmark, fn, inputs):
    sets = itertools.cycle(inputs)

    def timed(s):
        fn(s)
        synchronize(DEVICE)

    benchmark.pedantic(timed, setup=lambda: ((next(sets),), {}), rounds=ROUNDS, warmup_rounds=2)


@pytest.mark.parametrize("op, degree, provider", list(_params()))
def test_op(benchmark, op, degree, provider):
    benchmark.group = f"{op} n={degree} {BATCH}x{FEATURES}"
    sets = make_input_sets(BATCH, FEATURES, degree, torch.float32, DEVICE, rotation_bytes=64 << 20, max_sets=4)
    _pedantic(benchmark, provider_call(provider, OPS[op]), sets)


@pytest.mark.parametrize("provider", ["eager", *fused_backends(DEVICE)])
def test_train_step(benchmark, provider):
    case = TrainCase("digits64", features=64, hidden=512, layers=3, batch=1024)
    benchmark.group = f"train step {case.name}"
    step, _ = make_step(case, provider, DEVICE)
    _pedantic(benchmark, step, make_input_sets(case.batch, case.features, case.degree, torch.float32, DEVICE,
                                               rotation_bytes=64 << 20, max_sets=4))
