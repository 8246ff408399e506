"""One command for a GPU machine without network access: install, test, memcheck, benchmark, auto table.

    python -m benchmarks.gpu_check              # on a machine with a CUDA GPU (make gpu-check)
    python -m benchmarks.gpu_check --dry-run    # anywhere: prints the plan, runs what a CPU can

For an image that brings its own PyTorch with CUDA (e.g. torch 2.11 + CUDA 13, Triton 3.6), pytest,
safetensors and scikit-learn, nothing is downloaded. Steps, each with a time budget (9 minutes in all;
a step over its budget is stopped and reported, the next ones still run):

    install    pip install --no-deps --no-build-isolation -e . (builds the CUDA extension for this GPU's
               architecture only), then checks that "cuda" and "triton" are available
    tests      pytest tests on CUDA (every backend and dtype; tests needing absent packages skip, saying so),
               with pytest-xdist (one worker per core) where it is installed
    memcheck   compute-sanitizer --tool memcheck over small cases of every CUDA and Triton kernel
               (python -m benchmarks.gpu_check --kernel-cases), PyTorch's caching allocator off
    bench      python -m benchmarks.run --preset gpu-check (the full GPU preset trimmed to fit)
    train      the training-step benchmark (benchmarks/train_step.py through benchmarks.run)
    auto       the auto table from the bench rows: the fastest backend per op, dtype and size class,
               written to the results folder and to bezier_kernels/auto_table.json (read by backend="auto")

Everything lands in benchmarks/results/<date>-<gpu>/ (logs of every step, the benchmark files,
auto_table.json, summary.md); the headline ratios are printed at the end. Without a CUDA device
(and without --dry-run) it exits with status 2 and one line saying so.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.util
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOTAL_BUDGET_S = 540


@dataclass(frozen=True)
class Step:
    name: str
    budget_s: int
    what: str
    needs_gpu: bool = True


STEPS = (
    Step("install", 100, "pip install --no-deps --no-build-isolation -e . (CUDA extension for this GPU)"),
    Step("tests", 165, "pytest -q -ra [-n <cores>] tests (CUDA visible: every backend and dtype)"),
    Step("memcheck", 70, "compute-sanitizer --tool memcheck python -m benchmarks.gpu_check --kernel-cases"),
    Step("bench", 130, "python -m benchmarks.run --preset gpu-check --train-cases --time-limit <budget - 35>"),
    Step("train", 65, "python -m benchmarks.run --ops position --sizes 256x64 --degrees 3 --train-cases mlp2d "
                      "digits64 --train-providers eager compiled triton cuda --time-limit <budget - 35> "
                      "(the training-step benchmark)"),
    Step("auto", 5, "auto table from the bench rows -> auto_table.json", needs_gpu=False),
)
assert sum(s.budget_s for s in STEPS) <= TOTAL_BUDGET_S
# The benchmark steps start no new case this long before their budget ends (one case, a torch.compile
# included, takes up to ~30 s) and write what they measured; a step stopped at its budget writes nothing.
BENCH_MARGIN_S = 35


# ----------------------------------------------------------------------------- the auto table
def build_auto_table(rows: list[dict], device_type: str) -> list[dict]:
    """The fastest backend per (op kind, dtype, size class) from benchmark rows: the one with the lowest
    geometric mean of its time over the eager reference's on the cases where it ran ("torch" counts 1)."""
    from bezier_kernels.backends import BACKENDS, size_class

    scores: dict[tuple[str, str, str], dict[str, list[float]]] = {}
    for r in rows:
        if r.get("error") or r["provider"] not in BACKENDS[1:] or not r.get("vs_eager"):
            continue
        kind = "loss" if r["op"].startswith("loss") else "path"
        key = (kind, r["dtype"], size_class(r["batch"] * r["features"]))
        scores.setdefault(key, {"torch": []})[r["provider"]] = (
            scores.get(key, {}).get(r["provider"], []) + [-math.log(r["vs_eager"])])
    entries = []
    for (kind, dtype, size), by_backend in sorted(scores.items()):
        means = {name: sum(v) / len(v) if v else 0.0 for name, v in by_backend.items()}
        best = min(means, key=means.get)
        entries.append({"device_type": device_type, "op": kind, "dtype": dtype, "size_class": size, "backend": best,
                        "vs_eager": round(math.exp(-means[best]), 3)})
    return entries


def write_auto_table(rows: list[dict], device_type: str, device_name: str, out: Path,
                     package_copy: bool = True) -> Path:
    entries = build_auto_table(rows, device_type)
    table = {"device_name": device_name, "created_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
             "method": "benchmarks.gpu_check: lowest geometric-mean time over eager per op kind, dtype, size class",
             "entries": entries}
    path = out / "auto_table.json"
    path.write_text(json.dumps(table, indent=1) + "\n")
    if package_copy:
        shutil.copyfile(path, ROOT / "bezier_kernels" / "auto_table.json")
    return path


# ----------------------------------------------------------------------------- kernel cases (memcheck)
def kernel_cases(device: str, backends: list[str]) -> int:
    """Small cases of every kernel of the given backends (path fwd/bwd per order count, loss per target
    and loss, several tilings), checked against the reference; the number of cases run."""
    import torch

    import bezier_kernels as bk

    count = 0
    gen = torch.Generator(device=device).manual_seed(0)
    for backend in backends:
        for dtype in (torch.float32, torch.bfloat16):
            print(f"kernel cases: {backend} {dtype} ({count} done)", flush=True)  # how far a stopped run got
            for B, D, n in ((3, 5, 1), (4, 70, 3), (2, 1100, 4), (33, 2, 3)):
                def randn(*shape):
                    return torch.randn(shape, generator=gen, device=device).to(dtype)
                x0, x1 = randn(B, D), randn(B, D)
                g = randn(B, n - 1, D) if n > 1 else None
                t = torch.rand(B, generator=gen, device=device)
                leaves = [x.clone().requires_grad_(True) for x in (x0, x1, t)]
                for orders in ((0,), (0, 1), (0, 1, 2)):
                    out = bk.bezier(leaves[0], leaves[1], leaves[2], g, orders=orders, backend=backend)
                    ref = bk.bezier(x0.float(), x1.float(), t, None if g is None else g.float(), orders=orders,
                                    backend="torch")
                    for a, b in zip(out, ref):
                        torch.testing.assert_close(a.float(), b, rtol=2e-2, atol=2e-2)
                    torch.autograd.grad(sum(o.float().sum() for o in out), leaves)
                    count += 1
                for target in ("velocity", "endpoint"):
                    for loss in ("mse", "pseudo_huber"):
                        pred = randn(B, D).requires_grad_(True)
                        value = bk.bezier_distill_loss(pred, leaves[0], x1, leaves[2], g, target=target, loss=loss,
                                                       backend=backend)
                        value.backward()
                        bk.bezier_distill_loss(pred.detach(), x0, x1, t, g, target=target, loss=loss,
                                               reduction="none", backend=backend)
                        count += 1
    if device == "cuda":
        torch.cuda.synchronize()
    return count


# ----------------------------------------------------------------------------- steps
def _run(cmd: list[str], budget_s: int, log: Path, env: dict | None = None) -> tuple[bool, str]:
    """Runs cmd with a time limit, output to log; (passed, one-line result). The command gets a process
    group of its own, killed whole when the step ends: pytest-xdist's workers, compute-sanitizer's target
    and compile workers would otherwise outlive a stopped step and load the GPU under the next one."""
    start = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                                start_new_session=True)
        try:
            code = proc.wait(timeout=budget_s)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if code is None:
        return False, f"stopped at its {budget_s} s budget (log {log.name})"
    tail = log.read_text(errors="replace").strip().splitlines()[-1:] or [""]
    seconds = time.perf_counter() - start
    return code == 0, f"exit {code} in {seconds:.0f} s: {tail[0][:160]} (log {log.name})"


def _gpu_arch() -> str:
    import torch

    major, minor = torch.cuda.get_device_capability()
    return f"{major}.{minor}"


def cuda_home() -> str | None:
    """The CUDA toolkit the extension builds with: CUDA_HOME or CUDA_PATH when set, else the one the nvcc on PATH
    runs, as its dry run names it (torch would guess the folder above nvcc's, wrong for a wrapper script such as
    /usr/local/bin/nvcc running /usr/local/cuda-13.0/bin/nvcc: no cuda_runtime.h there); None without nvcc."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            return os.environ[var]
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return None
    try:
        proc = subprocess.run([nvcc, "-dryrun", "-c", "-x", "cu", os.devnull, "-o", os.devnull], capture_output=True,
                              text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    top = re.search(r"^#\$ TOP=(.+)$", proc.stdout + proc.stderr, re.MULTILINE)
    return os.path.realpath(top.group(1).strip()) if top else None


def _commands(out: Path) -> dict[str, tuple[list[str], dict]]:
    py = sys.executable
    jobs = str(max(1, min(16, os.cpu_count() or 1)))
    home = cuda_home()
    budgets = {step.name: step.budget_s for step in STEPS}
    return {
        "install": ([py, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "-e", "."],
                    {"MAX_JOBS": jobs, "TORCH_CUDA_ARCH_LIST": os.environ.get("TORCH_CUDA_ARCH_LIST") or _gpu_arch(),
                     **({"CUDA_HOME": home} if home else {})}),
        "tests": tests_command(py, os.cpu_count() or 1, importlib.util.find_spec("xdist") is not None),
        "memcheck": (["compute-sanitizer", "--tool", "memcheck", "--error-exitcode", "1", "--target-processes", "all",
                      py, "-m", "benchmarks.gpu_check", "--kernel-cases"],
                     # every tensor its own allocation: an access past a tensor's end inside one of the
                     # caching allocator's segments would pass memcheck unseen
                     {"PYTORCH_NO_CUDA_MEMORY_CACHING": "1"}),
        "bench": ([py, "-m", "benchmarks.run", "--preset", "gpu-check", "--train-cases", "--out", str(out / "bench"),
                   "--time-limit", str(budgets["bench"] - BENCH_MARGIN_S)], {}),
        # the compiled fused steps left out: each is one more training-step compile (~20-40 s)
        "train": ([py, "-m", "benchmarks.run", "--ops", "position", "--sizes", "256x64", "--degrees", "3",
                   "--providers", "eager", "compiled", "triton", "cuda", "--train-cases", "mlp2d", "digits64",
                   "--train-providers", "eager", "compiled", "triton", "cuda", "--out", str(out / "train"),
                   "--time-limit", str(budgets["train"] - BENCH_MARGIN_S)], {}),
    }


def tests_command(py: str, cpus: int, xdist: bool) -> tuple[list[str], dict]:
    """The tests step's pytest command and environment. One after another, the suite's CPU tests (~3 min on a
    2-core CI machine), its CUDA cases and the Triton compiles they cause (~300 specializations) overrun the
    step's budget; with pytest-xdist (in the GPU image) one worker per core, one thread each."""
    cmd = [py, "-m", "pytest", "-q", "-ra", "-p", "no:cacheprovider"]
    if not xdist or cpus < 2:
        return [*cmd, "tests"], {}
    workers = min(16, cpus)
    return [*cmd, "-n", str(workers), "tests"], {"OMP_NUM_THREADS": str(max(1, cpus // workers))}


def software_versions() -> str:
    """What the install builds with, for the logs: an image's setuptools older than 77 cannot read
    pyproject.toml's license expression, say."""
    from importlib import metadata

    import torch

    found = [f"python {sys.version.split()[0]}", f"torch {torch.__version__}"]  # with its +cu130 tag
    for package in ("triton", "numpy", "setuptools", "pytest", "pytest-xdist"):
        try:
            found.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            found.append(f"{package} absent")
    return ", ".join(found)


def _check_install() -> str:
    code = ("import bezier_kernels as bk; i = bk.available_backends(); "
            "bad = [f'{n}: {i[n].reason}' for n in ('cuda', 'triton') if not i[n].available]; "
            "print('; '.join(bad) or 'cuda and triton available'); raise SystemExit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    return ("ok: " if proc.returncode == 0 else "FAILED: ") + (proc.stdout.strip() or proc.stderr.strip()[-200:])


def headline(rows: list[dict]) -> list[str]:
    """The summary's ratios: per fused backend, op and size at float32, vs eager / compiled / mse."""
    lines = []
    for r in rows:
        if r.get("error") or r["provider"] in ("eager", "compiled", "mse") or r["dtype"] != "float32":
            continue
        parts = [f"{name} {r[field]:.2f}x" for name, field in (("eager", "vs_eager"), ("compiled", "vs_compiled"),
                                                                ("mse", "vs_mse")) if r.get(field)]
        gbps = f", {r['gbps']:.0f} GB/s ({r['copy_fraction']:.0%} of copy)" if r.get("gbps") else ""
        lines.append(f"{r['provider']:7} {r['op']:36} n={r['degree']} {r['batch']}x{r['features']}: "
                     f"{r['median_ms'] * 1e3:.0f} us; vs {', '.join(parts)}{gbps}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="print the steps and budgets; run what a CPU can")
    parser.add_argument("--out", type=Path, help="results folder (default benchmarks/results/<date>-<gpu>)")
    parser.add_argument("--kernel-cases", action="store_true", help=argparse.SUPPRESS)  # the memcheck payload
    args = parser.parse_args(argv)

    import torch

    if args.kernel_cases:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        import bezier_kernels as bk

        names = [n for n, i in bk.available_backends().items() if n != "torch" and i.available and device in i.devices]
        names.sort(key=lambda n: n != "cuda")  # the hand-indexed CUDA C++ kernels first, should the budget end
        print(f"kernel cases: {kernel_cases(device, names)} on {device} ({', '.join(names)})")
        return 0

    gpu = torch.cuda.is_available()
    if not gpu and not args.dry_run:
        print("gpu_check: no CUDA device visible (torch.cuda.is_available() is False); use --dry-run to see the plan",
              file=sys.stderr)
        return 2
    date = dt.date.today().isoformat()
    name = torch.cuda.get_device_name() if gpu else "cpu-dry-run"
    out = args.out or ROOT / "benchmarks" / "results" / f"{date}-{re.sub(r'[^a-z0-9]+', '-', name.lower()).strip('-')}"
    out.mkdir(parents=True, exist_ok=True)
    commands = _commands(out) if gpu else {}
    versions = software_versions()
    print(f"gpu_check: {name}; {versions}; budget {TOTAL_BUDGET_S} s, results in {out}")
    started = time.perf_counter()
    report = []
    for step in STEPS:
        line = f"[{time.perf_counter() - started:4.0f} s] {step.name:8} (budget {step.budget_s:3d} s) {step.what}"
        if args.dry_run:
            print(line + (": skipped (needs a GPU)" if step.needs_gpu and not gpu else ""), flush=True)
            if step.name == "memcheck":  # the payload runs on the CPU backends too
                from bezier_kernels import available_backends

                info = available_backends()
                print(f"           CPU stand-in: {kernel_cases('cpu', ['cpp'] if info['cpp'].available else [])} "
                      "kernel cases of cpp passed", flush=True)
            if step.name == "auto":
                rows = _dry_run_rows(out)
                path = write_auto_table(rows, "cpu", "dry run (tiny CPU sweep)", out, package_copy=False)
                print(f"           CPU stand-in: {path} from a tiny CPU sweep "
                      f"({len(json.loads(path.read_text())['entries'])} entries; not installed)", flush=True)
            continue
        print(line, flush=True)
        if step.name == "auto":
            rows = json.loads((out / "bench" / "results.json").read_text())["rows"] if (
                out / "bench" / "results.json").exists() else []
            path = write_auto_table(rows, "cuda", name, out)
            report.append(f"auto: {path} ({len(json.loads(path.read_text())['entries'])} entries), "
                          "installed as bezier_kernels/auto_table.json")
            continue
        cmd, env = commands[step.name]
        passed, result = _run(cmd, step.budget_s, out / f"{step.name}.log", env)
        if step.name == "install" and passed:
            result += "; " + _check_install()
        results = out / step.name / "results.json"
        if step.name in ("bench", "train") and results.exists():
            stopped = json.loads(results.read_text()).get("stopped_early")
            result += f"; {stopped}" if stopped else ""
        report.append(f"{step.name}: {'ok' if passed else 'FAILED'}, {result}")
        print("           " + report[-1], flush=True)
    if args.dry_run:
        print(f"gpu_check --dry-run: {len(STEPS)} steps, {sum(s.budget_s for s in STEPS)} s budgeted")
        return 0
    rows = []
    for part in ("bench", "train"):
        path = out / part / "results.json"
        if path.exists():
            rows += json.loads(path.read_text())["rows"] if part == "bench" else []
    summary = ["# gpu_check: " + name, "", versions, "", *[f"- {line}" for line in report], "",
               "## Headline ratios", "",
               *[f"    {line}" for line in headline(rows)]]
    (out / "summary.md").write_text("\n".join(summary) + "\n")
    print("\n".join(summary))
    print(f"gpu_check: done in {time.perf_counter() - started:.0f} s; {out / 'summary.md'}")
    return 0 if all(": ok" in line[:20] or line.startswith("auto") for line in report) else 1


def _dry_run_rows(out: Path) -> list[dict]:
    """A tiny CPU sweep (two sizes, the eager reference and cpp) whose rows stand in for the GPU bench."""
    from . import run

    result = run.main(["--device", "cpu", "--ops", "position+velocity", "loss_fwd_bwd:velocity:mse", "--degrees", "3",
                       "--sizes", "8x4", "256x64", "--compile", "none", "--repeats", "5", "--warmup", "1",
                       "--copy-mb", "4", "--train-cases", "--out", str(out / "dry-run-bench")])
    return result["rows"]


if __name__ == "__main__":
    sys.exit(main())
