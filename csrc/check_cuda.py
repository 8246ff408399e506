"""Compile-only check of the CUDA sources, for CI machines with nvcc but no GPU.

    python3 csrc/check_cuda.py [--arch 80 90] [--jobs 2]

Compiles every csrc/*.cu with nvcc for each architecture (default sm_80 and sm_90), with every
warning an error (front end, host compiler and ptxas) and the flags torch's CUDAExtension adds
(C++20, no implicit half conversions); fails on any error, warning or register spill, and prints each
kernel's registers, stack frame, spills and static shared memory from `ptxas -v`. Then, when
torch's headers are importable, syntax-checks the torch glue (csrc/bezier_cuda_ops.cpp) against
them and the CUDA runtime headers. Exits 0 with a SKIPPED line when nvcc is missing.
Environment: NVCC (the compiler; default: nvcc on PATH).
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CSRC = ROOT / "csrc"
OUT = ROOT / "build" / "cuda-check"
# What torch's BuildExtension passes nvcc (cpp_extension.COMMON_NVCC_FLAGS and the standard):
# among others, the half types have no implicit conversions
TORCH_NVCC_FLAGS = ["-std=c++20", "-D__CUDA_NO_HALF_OPERATORS__", "-D__CUDA_NO_HALF_CONVERSIONS__",
                    "-D__CUDA_NO_BFLOAT16_CONVERSIONS__", "-D__CUDA_NO_HALF2_OPERATORS__", "--expt-relaxed-constexpr"]
STRICT = ["--Werror", "all-warnings", "-Xptxas=-v,--warn-on-spills,--warning-as-error",
          "-Xcompiler=-Wall,-Wextra,-Werror"]

ENTRY = re.compile(r"Compiling entry function '(\S+)' for '(sm_\d+)'")
FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
USED = re.compile(r"Used (\d+) registers")
SMEM = re.compile(r"(\d+) bytes smem")


def compile_cu(nvcc: str, source: Path, archs: list[str]) -> tuple[Path, int, str, float]:
    gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]
    cmd = [nvcc, "-O3", f"-I{CSRC}", *TORCH_NVCC_FLAGS, *STRICT, *gencode,
           "-c", str(source), "-o", str(OUT / (source.stem + ".o"))]
    start = time.perf_counter()
    run = subprocess.run(cmd, capture_output=True, text=True)
    return source, run.returncode, run.stdout + run.stderr, time.perf_counter() - start


def demangle(names: list[str]) -> dict[str, str]:
    """Mangled kernel name -> short readable name (template arguments kept, parameters dropped)."""
    if not shutil.which("c++filt"):
        return {n: n for n in names}
    out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True).stdout.splitlines()
    short = {}
    for mangled, readable in zip(names, out):
        readable = readable.removeprefix("void ")
        depth, cut = 0, len(readable)
        for i, ch in enumerate(readable):  # the parameter list starts at the first '(' outside <>
            depth += ch == "<"
            depth -= ch == ">"
            if ch == "(" and depth == 0 and not readable.startswith("(anonymous", i):
                cut = i
                break
        name = readable[:cut].replace("(anonymous namespace)::", "").replace("bezier::gpu::", "")
        short[mangled] = name.replace("(bezier::Target)0", "velocity").replace("(bezier::Target)1", "endpoint")
    return short


def resource_table(log: str) -> list[dict]:
    """One row per (kernel, arch) from ptxas -v output."""
    rows, current = [], None
    for line in log.splitlines():
        if m := ENTRY.search(line):
            current = {"kernel": m.group(1), "arch": m.group(2)}
            rows.append(current)
        elif current and (m := FRAME.search(line)):
            current.update(stack=int(m.group(1)), spill_stores=int(m.group(2)), spill_loads=int(m.group(3)))
        elif current and (m := USED.search(line)):
            current["registers"] = int(m.group(1))
            smem = SMEM.search(line)
            current["smem"] = int(smem.group(1)) if smem else 0
    return rows


def cuda_include(nvcc: str) -> str | None:
    """The CUDA toolkit's include folder (cuda_runtime_api.h), for the given nvcc."""
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda",
                  str(Path(nvcc).resolve().parent.parent)]
    for home in filter(None, candidates):
        if Path(home, "include", "cuda_runtime_api.h").exists():
            return str(Path(home, "include"))
    return None


def check_glue(nvcc: str) -> tuple[bool, str]:
    """Syntax-checks the torch glue against torch's headers (shipped in the CPU wheel too) and
    the CUDA runtime's: (passed or skipped, what happened)."""
    glue = CSRC / "bezier_cuda_ops.cpp"
    try:
        from torch.utils.cpp_extension import include_paths
    except ImportError as error:
        return True, f"glue syntax check SKIPPED: torch is not importable ({error})"
    cuda = cuda_include(nvcc)
    if cuda is None:
        return True, "glue syntax check SKIPPED: no CUDA include folder found (set CUDA_HOME)"
    includes = [f"-I{p}" for p in include_paths()] + [f"-I{cuda}", f"-I{CSRC}"]
    if not any(Path(p[2:], "c10", "cuda", "CUDAGuard.h").exists() for p in includes):
        return True, "glue syntax check SKIPPED: torch's c10/cuda headers are not installed"
    # torch's CPU wheel lacks the generated c10/cuda/impl/cuda_cmake_macros.h (shared-library
    # export macros only); C10_CUDA_NO_CMAKE_CONFIGURE_FILE skips it.
    cmd = [os.environ.get("CXX", "c++"), "-std=c++20", "-fsyntax-only", "-Wall", "-Wextra", "-Werror",
           "-Wno-unused-parameter", "-DC10_CUDA_NO_CMAKE_CONFIGURE_FILE", *includes, str(glue)]
    start = time.perf_counter()
    run = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if run.returncode != 0:
        return False, f"{run.stdout}{run.stderr}\nFAILED: {glue.name} does not compile against torch's headers"
    return True, f"{glue.name} compiles against torch's and CUDA's headers ({seconds:.1f} s)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", nargs="+", default=["80", "90"], help="SM architectures (default: 80 90)")
    parser.add_argument("--jobs", type=int, default=int(os.environ.get("MAX_JOBS", "2")))
    args = parser.parse_args()
    nvcc = os.environ.get("NVCC") or shutil.which("nvcc")
    if not nvcc:
        print("check_cuda: SKIPPED: nvcc not found (set NVCC or put nvcc on PATH); CUDA kernels not compile-checked")
        return 0
    sources = sorted(CSRC.glob("*.cu"))
    OUT.mkdir(parents=True, exist_ok=True)
    version = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout.strip().splitlines()[-1]
    print(f"check_cuda: {len(sources)} .cu files, sm_{', sm_'.join(args.arch)}, {nvcc} ({version})")
    start = time.perf_counter()
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        glue = pool.submit(check_glue, nvcc)
        results = list(pool.map(lambda s: compile_cu(nvcc, s, args.arch), sources))
        glue_ok, glue_report = glue.result()
    ok, rows = True, []
    for source, code, log, seconds in results:
        print(f"  {source.name}: {'ok' if code == 0 else 'FAILED'} ({seconds:.1f} s)")
        if code != 0:
            ok = False
            print(log)
        rows += [dict(r, source=source.name) for r in resource_table(log)]
    if rows:
        names = demangle(sorted({r["kernel"] for r in rows}))
        archs = sorted({r["arch"] for r in rows})
        by_kernel: dict[tuple[str, str], dict[str, dict]] = {}
        for r in rows:
            by_kernel.setdefault((r["source"], names[r["kernel"]]), {})[r["arch"]] = r
        width = max(len(name) for _, name in by_kernel)
        print("\nper kernel and architecture: registers, stack frame bytes, spill stores/loads bytes; "
              "static smem bytes")
        print(f"{'kernel':{width}}  " + "".join(f"{a + ' regs stack spill':>22}  " for a in archs) + "smem")
        for (_, name), per_arch in sorted(by_kernel.items()):
            cells = []
            for a in archs:
                r = per_arch.get(a, {})
                spill = f"{r.get('spill_stores', 0)}/{r.get('spill_loads', 0)}" if r else "-"
                cells.append(f"{r.get('registers', '-'):>10} {r.get('stack', '-'):>5} {spill:>5}  ")
            smem = max(r.get("smem", 0) for r in per_arch.values())
            print(f"{name:{width}}  " + "".join(cells) + f"{smem:5}")
        spilled = [r for r in rows if r.get("spill_stores", 0) or r.get("spill_loads", 0)]
        if spilled:
            ok = False
            print(f"check_cuda: FAILED: {len(spilled)} kernel build(s) spill registers")
        print(f"check_cuda: {len(rows)} kernel builds, most registers {max(r.get('registers', 0) for r in rows)}, "
              f"{len(spilled)} with spills ({time.perf_counter() - start:.1f} s)")
    elif ok:
        ok = False
        print("check_cuda: FAILED: ptxas reported no kernels")
    print(f"check_cuda: {glue_report}")
    ok = ok and glue_ok
    print(f"check_cuda: {'OK' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
