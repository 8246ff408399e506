"""A Bezier probability path for facebookresearch/flow_matching (PyPI `flow-matching`).

`BezierProbPath` has ProbPath's interface, so a flow_matching training loop swaps it in for
`CondOTProbPath` / `AffineProbPath(CondOTScheduler())` and changes nothing else:

    path = BezierProbPath(guide_provider=teacher_guides)     # was: CondOTProbPath()
    sample = path.sample(x_0=x_0, x_1=x_1, t=t)              # PathSample: x_t = B(t), dx_t = B'(t)
    loss = (model(sample.x_t, sample.t) - sample.dx_t).pow(2).mean()

When flow_matching is installed the class subclasses its ProbPath and returns its PathSample;
without it, a stand-in base and a dataclass with the same fields are used.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from bezier_kernels.functional import bezier
from bezier_kernels.integrations._guides import GuideProvider, check_guide_provider, resolve_guides

try:
    from flow_matching.path import PathSample, ProbPath

    HAVE_FLOW_MATCHING = True
except ImportError:
    HAVE_FLOW_MATCHING = False

    class ProbPath:  # type: ignore[no-redef]
        """Stand-in for flow_matching.path.ProbPath when flow_matching is not installed."""

    @dataclass
    class PathSample:  # type: ignore[no-redef]
        """flow_matching.path.PathSample's fields: x_1, x_0 [B, *F], t [B], x_t, dx_t [B, *F]."""

        x_1: Tensor
        x_0: Tensor
        t: Tensor
        x_t: Tensor
        dx_t: Tensor


class BezierProbPath(ProbPath):
    """Bezier path X_t = B(t) from x_0 through guides to x_1, with target velocity dX_t = B'(t).

    guide_provider: None, or a callable (x_0, x_1) -> guides [B, n-1, *F] (or None) used when
    `sample` gets no `guides`. With no guides the path is the straight line and `sample` returns
    the same x_t and dx_t as flow_matching's CondOTProbPath (bit for bit on the torch and cpp backends;
    within one rounding on triton/cuda, whose kernels fuse the multiply-add) whenever 1 - t is exact in
    t's dtype (t from torch.rand, as its training loops draw it); otherwise (e.g. float64 x with an
    arbitrary float32 t) x_t here is the more accurate, as 1 - t is formed in float64.
    backend: a name of bezier_kernels.BACKENDS or "auto" (docs/spec.md section 3).
    """

    def __init__(self, guide_provider: GuideProvider | None = None, *, backend: str = "auto"):
        self.guide_provider = check_guide_provider(guide_provider)
        self.backend = backend

    def sample(self, x_0: Tensor, x_1: Tensor, t: Tensor, *, guides: Tensor | None = None) -> PathSample:
        """x_0, x_1 [B, *F]; t [B] (any float dtype); guides None or [B, n-1, *F], else the provider's.

        Returns PathSample(x_1, x_0, t, x_t = B(t), dx_t = B'(t)); x_t and dx_t in x_0's dtype,
        differentiable in x_0, x_1, guides and t.
        """
        guides = resolve_guides(guides, self.guide_provider, x_0, x_1)
        x_t, dx_t = bezier(x_0, x_1, t, guides, orders=(0, 1), backend=self.backend)
        return PathSample(x_1=x_1, x_0=x_0, t=t, x_t=x_t, dx_t=dx_t)
