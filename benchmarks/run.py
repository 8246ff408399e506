"""The benchmark suite (docs/spec.md section 6): every op and the training step, against the reference.

    python -m benchmarks.run --quick            # this 2-core CPU: 5 min when quiet, 21 torch.compile runs
    python -m benchmarks.run --preset full      # a GPU: every op, size and dtype
    python -m benchmarks.run --quick --ops position+velocity --degrees 1 3 --compile none

Sweeps op x degree x size (BxD) x dtype x provider (eager reference, torch.compile of it, every
fused backend available on the device), after measuring the device's copy bandwidth in the same
run. Writes ops.csv, train_step.csv, results.json, results.md and gbps.png to --out (default
benchmarks/results/<date>-<device>/). Column meanings: README, section "Performance".
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from . import report
from .cases import DTYPES, OPS, InputSet, Op, fused_backends, make_input_sets, provider_call
from .dispatch import operators
from .memory import peak_extra_bytes
from .timing import Timing, copy_bandwidth, first_call_ms, past, time_call, time_interleaved
from .train_step import TrainCase, run_case, train_providers

Size = tuple[int, int]
# the ops of the issues' targets; both loss extremes (the cheapest and the one needing a per-sample norm)
_COMPILE_OPS = ("position+velocity", "loss_fwd_bwd:velocity:mse", "loss_fwd_bwd:endpoint:pseudo_huber")


@dataclass(frozen=True)
class Preset:
    """A sweep. torch.compile runs only for compile_ops x compile_sizes x compile_dtypes (None: all),
    because on the CPU every new shape costs 10-60 s of compilation."""

    ops: tuple[str, ...]
    degrees: tuple[int, ...]
    sizes: tuple[Size, ...]
    dtypes: tuple[str, ...]
    repeats: int
    warmup: int
    compile_ops: tuple[str, ...] | None
    compile_sizes: tuple[Size, ...] | None
    compile_dtypes: tuple[str, ...] | None
    train_cases: tuple[TrainCase, ...]
    rotation_bytes: int  # inputs cycled per timing loop: well beyond the last-level cache
    copy_bytes: int  # buffer size of the copy-bandwidth probe
    # sizes with at most this many elements per [B, D] are timed with every provider interleaved, call by
    # call, small_repeats times (one call is microseconds: the host's cost, sensitive to other load)
    interleave_elements: int = 1 << 16
    small_repeats: int = 300

    def compiles(self, op: str, size: Size, dtype: str) -> bool:
        return all(allowed is None or value in allowed for value, allowed in
                   ((op, self.compile_ops), (size, self.compile_sizes), (dtype, self.compile_dtypes)))


DEGREES = (1, 2, 3, 5, 8, 16, 32)
PRESETS = {
    # 2-core CPU: a latency-bound and a bandwidth-bound size (8 MB per [B, D] float32 tensor, under
    # glibc's 32 MB mmap threshold); compile only where the CPU targets need it.
    # Plus issue 18's small sizes (256x2, 4096x2, 256x64) and a host-overhead row (8x4: tiny tensors).
    "quick": Preset(ops=tuple(OPS), degrees=DEGREES, sizes=((8, 4), (256, 2), (4096, 2), (256, 64), (2048, 1024)),
                    dtypes=("float32",),
                    repeats=10, warmup=2, compile_ops=_COMPILE_OPS,
                    compile_sizes=((2048, 1024),), compile_dtypes=("float32",),
                    train_cases=(TrainCase("mlp2d", features=2, hidden=256, layers=3, batch=4096),
                                 TrainCase("digits64", features=64, hidden=512, layers=3, batch=1024)),
                    rotation_bytes=64 << 20, copy_bytes=128 << 20),
    # GPU: from latency-bound (16K elements) to 64M elements per [B, D] tensor, every dtype.
    "full": Preset(ops=tuple(OPS), degrees=DEGREES,
                   sizes=((256, 64), (4096, 256), (16384, 1024), (65536, 1024)),
                   dtypes=tuple(DTYPES), repeats=50, warmup=5,
                   compile_ops=_COMPILE_OPS,
                   compile_sizes=None, compile_dtypes=("float32",),
                   train_cases=(TrainCase("mlp2d", features=2, hidden=512, layers=3, batch=65536),
                                TrainCase("digits64", features=64, hidden=1024, layers=4, batch=8192)),
                   rotation_bytes=512 << 20, copy_bytes=1 << 30),
    # benchmarks.gpu_check: the full preset trimmed to about two minutes on a GPU (degree 3, four sizes
    # from host-bound to 64M elements, float32 and bfloat16; torch.compile at the largest size only)
    "gpu-check": Preset(ops=("position+velocity", "loss_fwd:velocity:mse") + _COMPILE_OPS[1:], degrees=(3,),
                        sizes=((256, 64), (4096, 2), (16384, 1024), (65536, 1024)), dtypes=("float32", "bfloat16"),
                        repeats=30, warmup=5, compile_ops=_COMPILE_OPS, compile_sizes=((65536, 1024),),
                        compile_dtypes=("float32",), train_cases=(), rotation_bytes=512 << 20, copy_bytes=1 << 30,
                        small_repeats=100),
}


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def measure(op: Op, provider: str, sets: list[InputSet], degree: int, dtype: str, preset: Preset,
            device: torch.device, timing: Timing | None = None, call=None) -> dict:
    """One row: timing (measured here unless given), operators per call, traffic and peak extra memory
    of op with provider (errors are recorded)."""
    x0 = sets[0].x0
    batch, features = x0.shape
    row = {"op": op.name, "degree": degree, "batch": batch, "features": features, "dtype": dtype,
           "provider": provider, "sets": len(sets), "repeats": preset.repeats, "median_ms": None, "min_ms": None,
           "max_ms": None, "first_call_ms": None, "gbps": None, "copy_fraction": None, "vs_eager": None,
           "vs_compiled": None, "peak_extra_bytes": None, "peak_extra_tensors": None, "error": "",
           "traffic_bytes": op.traffic_bytes(batch, features, degree, x0.element_size()), "vs_mse": None,
           "operators": None}
    try:
        if call is None:
            call = provider_call(provider, op)
            row["first_call_ms"] = first_call_ms(call, sets[0], device)
        if timing is None:
            timing = time_call(call, sets, repeats=preset.repeats, warmup=preset.warmup, device=device)
        row.update(median_ms=timing.median, min_ms=timing.min, max_ms=timing.max, repeats=len(timing.samples_ms))
        row["operators"] = len(operators(lambda: call(sets[0])))
        sets[0].pred.grad = None  # the gradient a step would allocate is part of the peak
        row["peak_extra_bytes"] = peak_extra_bytes(call, sets[0], device)
        row["peak_extra_tensors"] = row["peak_extra_bytes"] / (batch * features * x0.element_size())
    except Exception as error:  # one failing provider (e.g. out of memory) must not end the sweep
        row["error"] = f"{type(error).__name__}: {error}".splitlines()[0]
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return row


def _measures(provider: str, op: Op, preset: Preset, size: Size, dtype: str) -> bool:
    """Whether the sweep has a row for provider at this op and size (compile and mse baselines are partial)."""
    if provider == "compiled":
        return preset.compiles(op.name, size, dtype)
    return provider != "mse" or (op.is_loss and op.backward)


class _Call:
    """A provider's call with its first-call time (compile and warm-up cost)."""

    def __init__(self, fn, first_input, device: torch.device):
        self.fn = fn
        self.first_call_ms = first_call_ms(fn, first_input, device)

    def __call__(self, s: InputSet):
        return self.fn(s)


def _interleaved(op: Op, providers: list[str], sets: list[InputSet], preset: Preset,
                 device: torch.device) -> tuple[dict, dict]:
    """Calls and timings of the providers that build, timed call by call in turn (errors left to measure)."""
    calls = {}
    for provider in providers:
        try:
            calls[provider] = _Call(provider_call(provider, op), sets[0], device)
        except Exception:  # measure() records the error
            pass
    repeats = max(preset.repeats, preset.small_repeats)
    return calls, time_interleaved(calls, sets, repeats=repeats, warmup=max(preset.warmup, 10), device=device)


def run_ops(preset: Preset, providers: list[str], device: torch.device, copy_gbps: float,
            deadline: float | None = None) -> tuple[list[dict], int]:
    """(rows of every (dtype, size, degree, op) case, in that order; the (dtype, size, degree) cases run):
    once deadline passes (timing.past), no new (dtype, size, degree) case starts."""
    rows = []
    started = time.perf_counter()
    cases_run = 0
    for dtype, (batch, features), degree in itertools.product(preset.dtypes, preset.sizes, preset.degrees):
        if past(deadline):
            break
        cases_run += 1
        sets = make_input_sets(batch, features, degree, DTYPES[dtype], device, preset.rotation_bytes)
        for op in (OPS[name] for name in preset.ops):
            names = [p for p in providers if _measures(p, op, preset, (batch, features), dtype)]
            calls, timings = {}, {}
            if batch * features <= preset.interleave_elements:
                calls, timings = _interleaved(op, names, sets, preset, device)
            for provider in names:
                row = measure(op, provider, sets, degree, dtype, preset, device, timings.get(provider),
                              calls.get(provider))
                if provider in calls:
                    row["first_call_ms"] = calls[provider].first_call_ms
                rows.append(row)
                result = row["error"] or f"{row['median_ms']:.3f} ms ({row['min_ms']:.3f}-{row['max_ms']:.3f})"
                _log(f"[{time.perf_counter() - started:6.0f} s] {op.name} n={degree} {batch}x{features} "
                     f"{dtype} {provider}: {result}")
        del sets
        if device.type == "cuda":
            torch.cuda.empty_cache()
    report.add_speedups(rows, ("op", "degree", "batch", "features", "dtype"))
    for row in rows:
        if not row["error"]:
            row["gbps"] = row["traffic_bytes"] / (row["median_ms"] * 1e-3) / 1e9
            row["copy_fraction"] = row["gbps"] / copy_gbps
    return rows, cases_run


def _size(text: str) -> Size:
    try:
        batch, features = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"sizes are BxD, e.g. 2048x1024; got {text!r}") from None
    return batch, features


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=tuple(PRESETS), help="default: full on CUDA, quick on the CPU")
    parser.add_argument("--time-limit", type=float, metavar="SECONDS",
                        help="start no new case after this many seconds and write what was measured (gpu_check)")
    parser.add_argument("--train-providers", nargs="+", metavar="NAME",
                        help="training-step providers (default: eager, compiled, each fused backend and it compiled)")
    parser.add_argument("--quick", action="store_const", const="quick", dest="preset", help="same as --preset quick")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--ops", nargs="+", choices=tuple(OPS), metavar="OP", help=f"subset of {', '.join(OPS)}")
    parser.add_argument("--degrees", nargs="+", type=int)
    parser.add_argument("--sizes", nargs="+", type=_size, metavar="BxD")
    parser.add_argument("--dtypes", nargs="+", choices=tuple(DTYPES))
    parser.add_argument("--providers", nargs="+", metavar="NAME",
                        help="eager, compiled, fused backend names and mse (default: all that run on the device)")
    parser.add_argument("--compile", choices=("preset", "all", "none"), default="preset",
                        help="where torch.compile runs: the preset's selection, every case, or nowhere")
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--warmup", type=int)
    parser.add_argument("--copy-mb", type=int, help="buffer size of the copy-bandwidth probe (MB)")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (CPU)")
    parser.add_argument("--train-cases", nargs="*", metavar="NAME", help="training-step cases (none: skip)")
    parser.add_argument("--train-batch", type=int, help="override the training-step batch size")
    parser.add_argument("--out", type=Path, help="output folder (default benchmarks/results/<date>-<device>)")
    return parser.parse_args(argv)


def _configure(args: argparse.Namespace, device: torch.device) -> tuple[Preset, list[str], list[str]]:
    """The preset with the command line's overrides, the op providers and the training providers."""
    preset = PRESETS[args.preset or ("full" if device.type == "cuda" else "quick")]
    overrides = {k: tuple(v) for k, v in (("ops", args.ops), ("degrees", args.degrees), ("sizes", args.sizes),
                                           ("dtypes", args.dtypes)) if v}
    overrides.update({k: v for k, v in (("repeats", args.repeats), ("warmup", args.warmup)) if v is not None})
    if args.repeats is not None:  # an explicit count holds for the interleaved small sizes too
        overrides["small_repeats"] = args.repeats
    if args.copy_mb:
        overrides["copy_bytes"] = args.copy_mb << 20
    if args.compile == "all":
        overrides.update(compile_ops=None, compile_sizes=None, compile_dtypes=None)
    elif args.compile == "none":
        overrides.update(compile_ops=())
    cases = {case.name: case for case in preset.train_cases}
    if args.train_cases is not None:
        unknown = set(args.train_cases) - set(cases)
        if unknown:
            raise SystemExit(f"unknown training-step cases {sorted(unknown)}; choose from {sorted(cases)}")
        cases = {name: cases[name] for name in args.train_cases}
    overrides["train_cases"] = tuple(replace(c, batch=args.train_batch or c.batch) for c in cases.values())
    preset = replace(preset, **overrides)
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        preset = replace(preset, dtypes=tuple(d for d in preset.dtypes if d != "bfloat16"))

    fused = fused_backends(device)
    providers = args.providers or ["eager", "compiled"] + fused + ["mse"]
    unknown = set(providers) - {"eager", "compiled", "mse", *fused}
    if unknown:
        raise SystemExit(f"providers {sorted(unknown)} do not run on {device.type} here; choose from "
                         f"{['eager', 'compiled', *fused, 'mse']}")
    if "compiled" not in providers:
        preset = replace(preset, compile_ops=())
    train = train_providers([p for p in providers if p in fused], compile_=args.compile != "none"
                            and "compiled" in providers)
    if args.train_providers:
        unknown = set(args.train_providers) - set(train)
        if unknown:
            raise SystemExit(f"training-step providers {sorted(unknown)} are not among {train} here")
        train = [p for p in train if p in args.train_providers]
    return preset, providers, train


def _stopped_early(preset: Preset, cases_run: int, train_rows: int, train_planned: int,
                   time_limit: float | None) -> str:
    """What the time limit left out ("" when every case ran)."""
    planned = len(preset.dtypes) * len(preset.sizes) * len(preset.degrees)
    if cases_run == planned and train_rows == train_planned:
        return ""
    return (f"stopped early at the {time_limit:g} s time limit: {cases_run} of {planned} (dtype, size, degree) "
            f"cases and {train_rows} of {train_planned} training-step rows measured")


def main(argv: list[str] | None = None) -> dict:
    started = time.perf_counter()
    args = parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    preset, providers, train_providers_ = _configure(args, device)
    env = report.environment(device)
    _log(report.environment_line(env, None))

    copy = copy_bandwidth(device, preset.copy_bytes)
    copy_info = {"nbytes": copy.nbytes, "gbps": copy.gbps, "best_gbps": copy.best_gbps,
                 "min_ms": copy.timing.min, "median_ms": copy.timing.median, "max_ms": copy.timing.max}
    _log(f"copy bandwidth: {copy.gbps:.1f} GB/s (best {copy.best_gbps:.1f})")
    deadline = None if args.time_limit is None else started + args.time_limit
    rows, cases_run = run_ops(preset, providers, device, copy.gbps, deadline)
    train_rows = []
    for case in preset.train_cases:
        train_rows += run_case(case, train_providers_, device, preset.repeats, preset.warmup,
                               preset.rotation_bytes, _log, deadline)
    env["load_average_end"] = list(os.getloadavg())
    result = {"command": "python -m benchmarks.run " + " ".join(sys.argv[1:] if argv is None else argv),
              "preset": args.preset or ("full" if device.type == "cuda" else "quick"),
              "environment": env, "copy_bandwidth": copy_info, "rows": rows, "train_step": train_rows,
              "stopped_early": _stopped_early(preset, cases_run, len(train_rows),
                                              len(preset.train_cases) * len(train_providers_), args.time_limit)}
    if result["stopped_early"]:
        _log(result["stopped_early"])
    out_dir = args.out or report.default_out_dir(env)
    for path in report.write(result, out_dir):
        print(path)
    return result


if __name__ == "__main__":
    main()
