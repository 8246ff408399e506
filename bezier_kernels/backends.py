"""Backend registry: what runs here, why the rest does not, and what "auto" picks.

Backends (docs/spec.md section 3):
    torch   the pure-PyTorch reference, any device, any degree
    cpp     C++ kernels of the extension, CPU tensors
    triton  Triton kernels, CUDA tensors (CPU tensors when TRITON_INTERPRET=1)
    cuda    CUDA kernels of the extension, CUDA tensors

"auto" takes BEZIER_KERNELS_BACKEND when it is set; else, when an auto table is present (written by
`python -m benchmarks.gpu_check` from its measurements: bezier_kernels/auto_table.json, or the file
named by BEZIER_KERNELS_AUTO_TABLE), its fastest backend for the device type, op, dtype and size
class; else the first available entry of AUTO_PREFERENCE for the inputs' device and the op. The
fused backends cover degrees up to MAX_KERNEL_DEGREE and "auto" uses "torch" above that. An explicit
backend that cannot run on the inputs is a ValueError, never a silent fallback.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import torch

BACKENDS = ("torch", "cpp", "triton", "cuda")
ENV_VAR = "BEZIER_KERNELS_BACKEND"
MAX_KERNEL_DEGREE = 64

# Fastest first, per (device type, op), as measured by the benchmark suite (README "Performance").
AUTO_PREFERENCE: dict[tuple[str, str], tuple[str, ...]] = {
    ("cpu", "path"): ("cpp", "torch"),
    ("cpu", "loss"): ("cpp", "torch"),
    ("cuda", "path"): ("triton", "cuda", "torch"),
    ("cuda", "loss"): ("triton", "cuda", "torch"),
}


# ----------------------------------------------------------------------------- the auto table
AUTO_TABLE_ENV = "BEZIER_KERNELS_AUTO_TABLE"
AUTO_TABLE_FILE = Path(__file__).with_name("auto_table.json")
# size classes of the auto table, by elements per [B, D] tensor: (name, upper bound exclusive)
SIZE_CLASSES = (("small", 1 << 16), ("medium", 1 << 22), ("large", None))


def size_class(elements: int) -> str:
    """"small" (< 64K elements per [B, D]: host-bound), "medium" (< 4M) or "large"."""
    for name, bound in SIZE_CLASSES:
        if bound is None or elements < bound:
            return name
    raise AssertionError("unreachable")


def load_auto_table(path: Path | str | None = None) -> dict[tuple[str, str, str, str], str]:
    """The auto table as {(device type, op, dtype name, size class): backend}; {} when there is none.

    File format (JSON): {"entries": [{"device_type", "op" ("path" | "loss"), "dtype" ("float32", ...),
    "size_class", "backend"}, ...], ...}; other keys (where and when it was measured) are ignored.
    """
    path = Path(path or os.environ.get(AUTO_TABLE_ENV) or AUTO_TABLE_FILE)
    if not path.is_file():
        return {}
    try:
        entries = json.loads(path.read_text())["entries"]
        return {(e["device_type"], e["op"], e["dtype"], e["size_class"]): e["backend"] for e in entries
                if e["backend"] in BACKENDS}
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"the auto table {path} is not valid ({error}); delete it or rerun benchmarks.gpu_check") \
            from None


_AUTO_TABLE: dict | None = None  # loaded on first use


def auto_table() -> dict[tuple[str, str, str, str], str]:
    global _AUTO_TABLE
    if _AUTO_TABLE is None:
        _AUTO_TABLE = load_auto_table()
    return _AUTO_TABLE


def reload_auto_table() -> None:
    """Forget the loaded table (after writing a new one, or changing BEZIER_KERNELS_AUTO_TABLE)."""
    global _AUTO_TABLE
    _AUTO_TABLE = None


class KernelOps(NamedTuple):
    """The custom ops a fused backend provides, all with the schemas of csrc/bezier_ops.cpp
    (fused_loss: the whole loss with its autograd, the op bezier_distill_loss calls)."""

    path_fwd: Callable
    path_bwd: Callable
    loss_fwd: Callable
    fused_loss: Callable


@dataclass(frozen=True)
class BackendInfo:
    """Whether a backend works here, on which device types, and why not when it does not."""

    name: str
    available: bool
    devices: tuple[str, ...]
    reason: str

    def __str__(self) -> str:
        where = ", ".join(self.devices) if self.devices else "nowhere"
        return f"{self.name}: {'available on ' + where if self.available else 'unavailable'} ({self.reason})"


# Filled by bezier_kernels.ops (cpp, cuda) and bezier_kernels.triton_ops (triton) at import.
_KERNEL_OPS: dict[str, KernelOps] = {}
_STATUS: dict[str, BackendInfo] = {}


def register_backend(name: str, ops: KernelOps | None, devices: tuple[str, ...], reason: str) -> None:
    """Records a fused backend's ops (None when it cannot load) and where it runs."""
    if ops is not None:
        _KERNEL_OPS[name] = ops
    _STATUS[name] = BackendInfo(name, ops is not None and bool(devices), devices if ops is not None else (), reason)


def available_backends() -> dict[str, BackendInfo]:
    """Every backend with its availability, device types and the reason (e.g. why "cuda" is missing)."""
    info = {"torch": BackendInfo("torch", True, ("any",), "pure PyTorch reference")}
    for name in BACKENDS[1:]:
        info[name] = _STATUS.get(name, BackendInfo(name, False, (), "not registered"))
    return info


def kernel_ops(name: str) -> KernelOps:
    return _KERNEL_OPS[name]


def _runs_on(name: str, device_type: str) -> bool:
    if name == "torch":
        return True
    info = _STATUS.get(name)  # read directly: resolve_backend runs on every call
    return info is not None and info.available and device_type in info.devices


def resolve_backend(backend: str, device: torch.device, degree: int, op: str, dtype: torch.dtype | None = None,
                    elements: int | None = None) -> str:
    """The backend to run `op` ("path" or "loss") on tensors of `device` at `degree` (dtype and elements
    per [B, D] tensor select the auto table's entry, when there is a table)."""
    if backend == "auto":
        override = os.environ.get(ENV_VAR, "")
        if override and override != "auto":
            if override not in BACKENDS:
                raise ValueError(f"environment variable {ENV_VAR} must be one of {BACKENDS} or 'auto', "
                                 f"got {override!r}")
            backend = override
        else:
            table = auto_table()
            if table and dtype is not None and elements is not None:
                name = table.get((device.type, op, str(dtype).removeprefix("torch."), size_class(elements)))
                if name is not None and _runs_on(name, device.type) and (name == "torch"
                                                                          or degree <= MAX_KERNEL_DEGREE):
                    return name
            for name in AUTO_PREFERENCE.get((device.type, op), ("torch",)):
                if _runs_on(name, device.type) and (name == "torch" or degree <= MAX_KERNEL_DEGREE):
                    return name
            return "torch"
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS + ('auto',)}, got {backend!r}")
    if not _runs_on(backend, device.type):
        info = available_backends()[backend]  # (the error path only)
        raise ValueError(f"backend {backend!r} cannot run on {device.type} tensors: {info.reason}; "
                         f"available here: {[n for n in BACKENDS if _runs_on(n, device.type)]}")
    if backend != "torch" and degree > MAX_KERNEL_DEGREE:
        raise ValueError(f"backend {backend!r} supports degree 1..{MAX_KERNEL_DEGREE}, got degree {degree}; "
                         "use backend='torch' (or 'auto') for higher degrees")
    return backend
