"""Loads the compiled extension bezier_kernels._C, whose import registers the C++ ops (csrc/), and
checks its build against this package.

    EXTENSION     the module, or None when it is not built or does not match
    ERROR         why it is None ("" when loaded)
    BUILD_INFO    build_info() of the extension: openmp, cuda, max_degree ({} when not loaded)

The kernels' highest degree is defined once per language: bezier::kMaxDegree in
csrc/bezier_common.h, exported as build_info()["max_degree"], and backends.MAX_KERNEL_DEGREE,
which the Python layer (and the Triton kernels) use; an extension built with another value is
refused with the reason, since "auto" and the validation would let through degrees it cannot run.
"""
from __future__ import annotations

from types import ModuleType

from .backends import MAX_KERNEL_DEGREE

_REBUILD = "build it with: pip install --no-build-isolation -e ."


def _load() -> tuple[ModuleType | None, str, dict]:
    try:
        from . import _C
    except ImportError as error:
        return None, f"the C++ extension bezier_kernels._C is not built or failed to load ({error}); {_REBUILD}", {}
    info = dict(_C.build_info())
    if info.get("max_degree") != MAX_KERNEL_DEGREE:
        return None, (f"the C++ extension bezier_kernels._C was built with max_degree={info.get('max_degree')}, "
                      f"this package needs {MAX_KERNEL_DEGREE} (a stale build); re{_REBUILD}"), info
    return _C, "", info


EXTENSION, ERROR, BUILD_INFO = _load()
