"""Compiles the Triton kernels of bezier_kernels.triton_ops for a GPU, on a machine without one.

Run as a script with TRITON_INTERPRET unset (tests/test_triton.py does): the real launchers run on
CPU tensors, with torch.library.wrap_triton replaced by a stand-in that compiles each kernel for
the target (sm_90 by default) with the launch's own arguments (types, 16-divisibility, constexprs,
num_warps) instead of running it. Prints one JSON record per compiled variant: kernel, constexprs,
128-bit global loads and stores in the PTX, and registers and spill bytes reported by ptxas.
This catches what the interpreter cannot: code the Triton compiler rejects, lost vectorisation,
register spills.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.backends.nvidia.compiler import get_ptxas
from triton.compiler import ASTSource
from triton.runtime.jit import mangle_type

from bezier_kernels import triton_ops

ARCH = int(sys.argv[1]) if len(sys.argv) > 1 else 90
compiled_variants: set = set()


def _ptxas_usage(ptx: str) -> tuple[int, int]:
    """(registers, spill store bytes) of the PTX's kernel, from ptxas -v."""
    with tempfile.TemporaryDirectory() as tmp:
        src = f"{tmp}/kernel.ptx"
        with open(src, "w") as f:
            f.write(ptx)
        gpu_name = f"--gpu-name=sm_{ARCH}a" if ARCH >= 90 else f"--gpu-name=sm_{ARCH}"
        log = subprocess.run([get_ptxas(ARCH).path, "-v", gpu_name, src, "-o", f"{tmp}/kernel.o"],
                             capture_output=True, text=True, check=True).stderr
    registers = int(re.search(r"Used (\d+) registers", log).group(1))
    spills = int(re.search(r"(\d+) bytes spill stores", log).group(1))
    return registers, spills


class CompileInsteadOfLaunch:
    """Stands in for wrap_triton(kernel): kernel[grid](*args, **meta) compiles instead of launching."""

    def __init__(self, kernel):
        self.kernel = kernel

    def __getitem__(self, grid):
        def compile_for_target(*args, num_warps=4, **constexprs):
            values = dict(zip(self.kernel.arg_names, args), **constexprs)
            signature, attrs = {}, {}
            for index, param in enumerate(self.kernel.params):
                value = values[param.name]
                if param.is_constexpr:
                    signature[param.name] = "constexpr"
                    continue
                signature[param.name] = param.annotation_type or mangle_type(value)
                aligned = value.data_ptr() % 16 == 0 if isinstance(value, torch.Tensor) else (
                    type(value) is int and value % 16 == 0)
                if aligned:  # what the JIT's own specialisation would tell the compiler
                    attrs[(index,)] = [["tt.divisibility", 16]]
            source = ASTSource(self.kernel, signature, constexprs=constexprs, attrs=attrs)
            if (self.kernel.__name__, str(signature), str(constexprs)) in compiled_variants:
                return
            compiled_variants.add((self.kernel.__name__, str(signature), str(constexprs)))
            compiled = triton.compile(source, target=GPUTarget("cuda", ARCH, 32), options={"num_warps": num_warps})
            ptx = compiled.asm["ptx"]
            registers, spills = _ptxas_usage(ptx)
            print(json.dumps({
                "case": case_name,
                "kernel": self.kernel.__name__,
                "constexprs": {k: str(v) for k, v in constexprs.items()},
                "dtypes": sorted({signature[n] for n in signature if signature[n].startswith("*")}),
                "v4_loads": len(re.findall(r"ld\.global(?:\.\w+)*\.v4", ptx)),
                "v4_stores": len(re.findall(r"st\.global(?:\.\w+)*\.v4", ptx)),
                "registers": registers,
                "spill_bytes": spills,
            }), flush=True)

        return compile_for_target


# (name, dtype, B, D, degree, orders, launches), t in the points' dtype: the bandwidth case
# (contiguous float32, strides divisible by 16), half precision with odd D and several samples
# per program, float64 at the highest degree, and the straight line with two features.
CASES = [
    ("float32-contiguous", torch.float32, 64, 4096, 3, [0, 1],
     ("fwd", "bwd", "bwd_points", "bwd_t", "loss_velocity", "fused_mse", "fused_huber")),
    ("bfloat16-odd", torch.bfloat16, 6, 37, 5, [0, 1, 2], ("fwd", "bwd", "loss_endpoint", "fused_mse", "fused_huber",
                                                            "fused_residual")),
    ("float64-degree64", torch.float64, 3, 1029, 64, [2], ("fwd", "bwd")),
    ("float16-line", torch.float16, 300, 2, 1, [1, 0], ("fwd", "bwd", "loss_velocity", "fused_mse")),
]
case_name = ""


def main() -> None:
    global case_name
    triton_ops.wrap_triton = CompileInsteadOfLaunch
    torch.manual_seed(0)
    for name, dtype, batch, features, degree, orders, launches in CASES:
        case_name = name  # the records name their case
        points = torch.randn(batch, degree + 1, features).to(dtype)
        x0, x1, guides = points[:, 0], points[:, degree], points[:, 1:degree] if degree > 1 else None
        t, pred = torch.rand(batch).to(dtype), torch.randn(batch, features).to(dtype)
        grads = [torch.randn(batch, features).to(dtype) for _ in orders]
        factors = torch.rand(batch, dtype=torch.float64)  # loss_fwd's row_weight / out_scale
        run = {
            "fwd": lambda: triton_ops.triton_path_fwd(x0, x1, guides, t, orders),
            "bwd": lambda: triton_ops.triton_path_bwd(grads, x0, x1, guides, t, orders, True, True),
            "bwd_points": lambda: triton_ops.triton_path_bwd(grads[:1], x0, x1, guides, t, orders[:1], True, False),
            "bwd_t": lambda: triton_ops.triton_path_bwd(grads[:1], x0, x1, guides, t, orders[:1], False, True),
            "loss_velocity": lambda: triton_ops.triton_loss_fwd(pred, x0, x1, guides, t, factors, factors,
                                                                "velocity", "mse", 0.0),
            "loss_endpoint": lambda: triton_ops.triton_loss_fwd(pred, x0, x1, guides, t, factors, None,
                                                                "endpoint", "pseudo_huber", 0.1),
            # the whole loss: dL/dpred written (mse, and pseudo-Huber once the row is summed), or r
            "fused_mse": lambda: triton_ops.triton_fused_loss(pred, x0, x1, guides, t, None, "velocity", "mse", 0.0,
                                                              "mean", False, False),
            "fused_huber": lambda: triton_ops.triton_fused_loss(pred, x0, x1, guides, t, factors.float(), "endpoint",
                                                                "pseudo_huber", 0.1, "none", False, True),
            "fused_residual": lambda: triton_ops.triton_fused_loss(pred, x0, x1, guides, t, None, "velocity",
                                                                   "pseudo_huber", 0.1, "sum", True, True),
        }
        for launch in launches:
            run[launch]()


if __name__ == "__main__":
    main()
