"""What the suite measures: the ops, their inputs, their compulsory traffic and the providers.

Ops (docs/spec.md section 6), each at degree n, batch B, D features, element size s bytes (t is float32):

    position, position+velocity, position+velocity+acceleration  (K = 1, 2, 3 orders)
        reads x0, x1 and n-1 guides, writes K outputs:
        traffic = (n + 1 + K) * B * D * s + 4 * B
    loss_fwd:<target>:<loss>   (pred without grad, as in evaluation)
        reads pred, x0, x1, n-1 guides and t, writes the scalar loss:
        traffic = (n + 2) * B * D * s + 4 * B + s
    loss_fwd_bwd:<target>:<loss>   (the distillation step: only pred, the student's output, needs a grad)
        forward as above, then the backward reads the upstream scalar gradient and writes grad pred:
        traffic = (n + 3) * B * D * s + 4 * B + 2 * s
Saved intermediates (the fused loss's residual, the reference's stacked control points) are not
compulsory: they are what a provider spends beyond the minimum.

Providers: "eager" calls bezier_kernels.reference the way a flow codebase would; "compiled" is
torch.compile(dynamic=False) of that same reference (specialised per shape: its strongest form);
every fused backend available on the device goes through the public bezier_kernels functions; "mse"
(loss forward+backward only) is a plain F.mse_loss(pred, target) of the same [B, D], the floor a
fused loss is held to at small sizes (issue 18: at most 2x it).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable

import torch

import bezier_kernels as bk
from bezier_kernels import reference

TARGETS = ("velocity", "endpoint")
LOSSES = ("mse", "pseudo_huber")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
T_ITEMSIZE = 4  # t is float32 in every case


@dataclass(frozen=True)
class Op:
    """One benchmarked operation: a path evaluation (orders) or the loss (target, loss, backward)."""

    name: str
    orders: tuple[int, ...] = ()
    target: str = ""
    loss: str = ""
    backward: bool = False

    @property
    def is_loss(self) -> bool:
        return bool(self.target)

    def traffic_bytes(self, batch: int, features: int, degree: int, itemsize: int) -> int:
        """Compulsory traffic in bytes (formulas in the module docstring)."""
        points = (degree + 1) * batch * features * itemsize + T_ITEMSIZE * batch
        if not self.is_loss:
            return points + len(self.orders) * batch * features * itemsize
        forward = points + batch * features * itemsize + itemsize  # + pred, + the scalar loss
        return forward + (batch * features * itemsize + itemsize if self.backward else 0)


PATH_OPS = (
    Op("position", orders=(0,)),
    Op("position+velocity", orders=(0, 1)),
    Op("position+velocity+acceleration", orders=(0, 1, 2)),
)
LOSS_OPS = tuple(Op(f"{stage}:{target}:{loss}", target=target, loss=loss, backward=stage == "loss_fwd_bwd")
                 for stage in ("loss_fwd", "loss_fwd_bwd") for target in TARGETS for loss in LOSSES)
OPS = {op.name: op for op in PATH_OPS + LOSS_OPS}


@dataclass(frozen=True)
class InputSet:
    """One independent set of inputs; pred requires grad (loss_fwd uses its detached twin)."""

    x0: torch.Tensor
    x1: torch.Tensor
    guides: torch.Tensor | None
    t: torch.Tensor
    pred: torch.Tensor
    pred_nograd: torch.Tensor

    @property
    def nbytes(self) -> int:
        tensors = [self.x0, self.x1, self.t, self.pred] + ([] if self.guides is None else [self.guides])
        return sum(x.numel() * x.element_size() for x in tensors)


def make_input_sets(batch: int, features: int, degree: int, dtype: torch.dtype, device: torch.device,
                    rotation_bytes: int, max_sets: int = 16, seed: int = 0) -> list[InputSet]:
    """Enough independent input sets that cycling through them touches about rotation_bytes
    (so caches do not flatter small sizes): between 1 (one set already larger) and max_sets."""
    per_set = ((degree + 2) * batch * features) * torch.finfo(dtype).bits // 8 + T_ITEMSIZE * batch
    count = max(1, min(max_sets, math.ceil(rotation_bytes / max(per_set, 1))))
    gen = torch.Generator(device=device).manual_seed(seed)

    def randn(*shape):
        return torch.randn(shape, generator=gen, device=device).to(dtype)

    sets = []
    for _ in range(count):
        pred = randn(batch, features)
        sets.append(InputSet(randn(batch, features), randn(batch, features),
                             randn(batch, degree - 1, features) if degree > 1 else None,
                             torch.rand(batch, generator=gen, device=device),
                             pred.requires_grad_(True), pred.detach()))
    return sets


def make_call(op: Op, path_fn: Callable, loss_fn: Callable) -> Callable[[InputSet], object]:
    """A call of op on one InputSet through path_fn (bezier's signature) or loss_fn (bezier_distill_loss's)."""
    if not op.is_loss:
        def call(s: InputSet):
            return path_fn(s.x0, s.x1, s.t, s.guides, orders=op.orders)
    elif not op.backward:
        def call(s: InputSet):
            return loss_fn(s.pred_nograd, s.x0, s.x1, s.t, s.guides, target=op.target, loss=op.loss)
    else:
        def call(s: InputSet):
            s.pred.grad = None
            loss_fn(s.pred, s.x0, s.x1, s.t, s.guides, target=op.target, loss=op.loss).backward()
    return call


def fused_backends(device: torch.device) -> list[str]:
    """Every fused backend that runs on this device, except Triton's CPU interpreter (a test tool)."""
    names = []
    for name, info in bk.available_backends().items():
        if name != "torch" and info.available and device.type in info.devices:
            if not (name == "triton" and device.type == "cpu"):
                names.append(name)
    return names


def provider_functions(provider: str) -> tuple[Callable, Callable]:
    """(path, loss) with the signatures of bk.bezier and bk.bezier_distill_loss: the reference for
    "eager" and "compiled", else the public functions pinned to the fused backend `provider`."""
    if provider in ("eager", "compiled"):
        return reference.bezier, reference.bezier_distill_loss
    return (functools.partial(bk.bezier, backend=provider),
            functools.partial(bk.bezier_distill_loss, backend=provider))


def mse_call(s: InputSet) -> None:
    """The "mse" baseline: a plain F.mse_loss(pred, target) forward and backward of the same [B, D]."""
    s.pred.grad = None
    torch.nn.functional.mse_loss(s.pred, s.x1).backward()


def provider_call(provider: str, op: Op) -> Callable[[InputSet], object]:
    """op with "eager", "compiled" (a fresh torch.compile of the reference), a fused backend, or (loss
    forward+backward only) "mse", a plain F.mse_loss of the same [B, D]."""
    if provider == "mse":
        if not (op.is_loss and op.backward):
            raise ValueError("the mse baseline exists for the loss forward+backward ops only")
        return mse_call
    path_fn, loss_fn = provider_functions(provider)
    if provider == "compiled":
        torch._dynamo.reset()  # every case compiles afresh: no recompile limit, compile time is this case's
        path_fn, loss_fn = torch.compile(path_fn, dynamic=False), torch.compile(loss_fn, dynamic=False)
    return make_call(op, path_fn, loss_fn)
