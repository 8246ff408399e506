"""Quick CPU check (issue 2): "cpp" against the eager "torch" reference on this machine.

Position+velocity at degree 1, 3, 8, 16 and the fused loss forward+backward, float32, B*D = 4M
elements (B = 4096, D = 1024). Prints a markdown table of min / median / max milliseconds.

    python -m benchmarks.cpu_quick [--repeats 15] [--batch 4096] [--features 1024]
"""
from __future__ import annotations

import argparse
import platform

import torch

import bezier_kernels as bk
from benchmarks.timing import time_call


def make_inputs(batch: int, features: int, degree: int, sets: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(sets):
        x0, x1 = torch.randn(batch, features, generator=gen), torch.randn(batch, features, generator=gen)
        guides = torch.randn(batch, degree - 1, features, generator=gen) if degree > 1 else None
        t = torch.rand(batch, generator=gen)
        pred = torch.randn(batch, features, generator=gen).requires_grad_(True)
        out.append((x0, x1, guides, t, pred))
    return out


def path_call(backend):
    def run(x0, x1, guides, t, pred):
        return bk.bezier(x0, x1, t, guides, orders=(0, 1), backend=backend)
    return run


def loss_call(backend):
    def run(x0, x1, guides, t, pred):
        pred.grad = None
        bk.bezier_distill_loss(pred, x0, x1, t, guides, backend=backend).backward()
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--features", type=int, default=1024)
    parser.add_argument("--degrees", type=int, nargs="+", default=[1, 3, 8, 16])
    args = parser.parse_args()
    if not bk.available_backends()["cpp"].available:
        raise SystemExit(f"cpp backend unavailable: {bk.available_backends()['cpp'].reason}")
    print(f"# cpp vs eager torch, float32, B={args.batch}, D={args.features}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, {platform.processor() or platform.machine()}")
    print("| op | degree | torch ms (min/med/max) | cpp ms (min/med/max) | speedup (median) |")
    print("|---|---|---|---|---|")
    for degree in args.degrees:
        inputs = make_inputs(args.batch, args.features, degree, sets=3, seed=degree)
        for op, make in (("position+velocity", path_call), ("loss fwd+bwd", loss_call)):
            ref = time_call(make("torch"), inputs, repeats=args.repeats)
            fused = time_call(make("cpp"), inputs, repeats=args.repeats)
            print(f"| {op} | {degree} | {ref.min:.1f} / {ref.median:.1f} / {ref.max:.1f} | "
                  f"{fused.min:.1f} / {fused.median:.1f} / {fused.max:.1f} | {ref.median / fused.median:.1f}x |")


if __name__ == "__main__":
    main()
