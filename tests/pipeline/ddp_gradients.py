"""Gradients of one data-parallel training step with the fused ops, per backend, target, loss and dtype.

Run by tests/pipeline/test_distributed.py under `torchrun --nproc_per_node=2 ddp_gradients.py OUT`:
each rank computes the loss on its rows of one global batch inside DistributedDataParallel, and rank
0 writes the synchronised gradients to OUT (safetensors). In a single process `gradients` is the
reference: the same global batch, whole, without DDP. A rank exits with an error when threads started
inside the launch outlive it (Gloo's workers must stop when the process group is destroyed).
"""
from __future__ import annotations

import os
import sys

import torch
from safetensors.torch import save_file

import bezier_kernels as bk
from bezier_distill import distributed
from bezier_distill.data import seeded_generator
from bezier_distill.models import VelocityMLP

BATCH, DIM, DEGREE = 64, 3, 3
CASES = [(target, loss, dtype) for target, loss in (("velocity", "mse"), ("endpoint", "pseudo_huber"))
         for dtype in (torch.float32, torch.float64)]


def cpu_backends() -> list[str]:
    return [name for name, info in bk.available_backends().items() if info.available and
            (name == "torch" or "cpu" in info.devices)]


def gradients(backend: str, target: str, loss: str, dtype: torch.dtype,
              rows: slice | None = None) -> dict[str, torch.Tensor]:
    """Parameter gradients after one backward of the fused loss over this rank's rows (or `rows`) of a
    fixed global batch of degree-3 paths; with several ranks, DDP-averaged over them."""
    torch.manual_seed(0)
    model = VelocityMLP(DIM, 32, 2, 16).to(dtype)
    for p in model.parameters():  # the zero output layer would leave every other gradient zero
        torch.nn.init.normal_(p, std=0.3)
    net = distributed.data_parallel(model, torch.device("cpu"))
    generator = seeded_generator(7)
    x0, x1 = (torch.randn(BATCH, DIM, generator=generator, dtype=dtype) for _ in range(2))
    guides = torch.randn(BATCH, DEGREE - 1, DIM, generator=generator, dtype=dtype)
    t = torch.rand(BATCH, generator=generator, dtype=dtype)
    rows = distributed.batch_rows(BATCH) if rows is None else rows
    x0, x1, guides, t = x0[rows], x1[rows], guides[rows], t[rows]
    (xt,) = bk.bezier(x0, x1, t, guides, orders=(0,), backend=backend)
    value = bk.bezier_distill_loss(net(xt, t), x0, x1, t, guides, target=target, loss=loss, backend=backend)
    value.backward()
    return {name: p.grad for name, p in model.named_parameters()}


def case_name(backend: str, target: str, loss: str, dtype: torch.dtype) -> str:
    return f"{backend}-{target}-{loss}-{str(dtype).removeprefix('torch.')}"


def threads() -> int:
    """The OS threads of this process (Linux)."""
    return len(os.listdir("/proc/self/task"))


def main(out: str) -> None:
    before = threads()
    with distributed.launch("cpu"):
        results = {}
        for backend in cpu_backends():
            for target, loss, dtype in CASES:
                grads = gradients(backend, target, loss, dtype)
                results.update({f"{case_name(backend, target, loss, dtype)}/{k}": v for k, v in grads.items()})
        if distributed.world().main:
            save_file(results, out)
    # A Gloo worker still running at interpreter shutdown can free a finished all-reduce there, which
    # aborts the process: destroying the group must have joined them (distributed.launch).
    if threads() > before:
        raise SystemExit(f"{threads() - before} threads started in the launch outlived its process group")


if __name__ == "__main__":
    main(sys.argv[1])
