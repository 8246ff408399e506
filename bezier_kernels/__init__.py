"""bezier_kernels: fused kernels for Bezier-path flow models (the contract: docs/spec.md).

    >>> import torch, bezier_kernels as bk
    >>> x0, x1 = torch.randn(8, 2), torch.randn(8, 2)
    >>> guides = torch.randn(8, 1, 2)                      # degree 2
    >>> t = torch.rand(8)
    >>> xt, vt = bk.bezier(x0, x1, t, guides, orders=(0, 1))
    >>> loss = bk.bezier_distill_loss(vt + 0.1, x0, x1, t, guides)
"""
from . import backends as _backends
from . import ops as _ops  # registers the compiled backends  # noqa: F401
from ._version import __version__
from .backends import BACKENDS, MAX_KERNEL_DEGREE, BackendInfo, available_backends
from .functional import bernstein_weights, bezier, bezier_distill_loss, bezier_stacked

try:  # the Triton backend registers itself when it imports
    from . import triton_ops as _triton_ops  # noqa: F401
except ImportError as _error:
    _backends.register_backend("triton", None, (), f"the Triton backend did not load ({_error})")

__all__ = [
    "__version__",
    "BACKENDS",
    "MAX_KERNEL_DEGREE",
    "BackendInfo",
    "available_backends",
    "bernstein_weights",
    "bezier",
    "bezier_distill_loss",
    "bezier_stacked",
]
