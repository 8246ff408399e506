"""A Bezier conditional flow matcher for torchcfm (PyPI `torchcfm`).

`BezierConditionalFlowMatcher` has torchcfm's ConditionalFlowMatcher interface, so a torchcfm
training loop swaps it in and changes nothing else:

    # was: FM = ConditionalFlowMatcher(sigma=0.1)
    FM = BezierConditionalFlowMatcher(sigma=0.1, guide_provider=teacher_guides)
    t, xt, ut = FM.sample_location_and_conditional_flow(x0, x1)
    loss = ((model(torch.cat([xt, t[:, None]], dim=-1)) - ut) ** 2).mean()

The probability path is N(B(t), sigma^2 I): the Bezier curve B from x0 through the guides to x1,
smoothed by a constant sigma; its conditional flow is B'(t). When torchcfm is installed the class
subclasses its ConditionalFlowMatcher; without it, it stands alone with the same methods.
"""
from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

from bezier_kernels.functional import bezier
from bezier_kernels.integrations._guides import GuideProvider, check_guide_provider, resolve_guides

try:
    from torchcfm.conditional_flow_matching import ConditionalFlowMatcher

    HAVE_TORCHCFM = True
except ImportError:
    HAVE_TORCHCFM = False
    ConditionalFlowMatcher = object  # type: ignore[assignment,misc]


class BezierConditionalFlowMatcher(ConditionalFlowMatcher):
    """Flow matching on N(B(t), sigma^2 I) with conditional flow u_t = B'(t).

    sigma: constant smoothing >= 0 (torchcfm's sigma). guide_provider: None, or a callable
    (x0, x1) -> guides [B, n-1, *F] (or None) used when a method gets no `guides`. With no guides
    it returns what torchcfm's ConditionalFlowMatcher(sigma) returns from the same random state: bit
    for bit on the torch and cpp backends, within one rounding on triton/cuda (fused multiply-add).
    backend: a name of bezier_kernels.BACKENDS or "auto" (docs/spec.md section 3).
    """

    def __init__(self, sigma: float = 0.0, guide_provider: GuideProvider | None = None, *, backend: str = "auto"):
        if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real):
            raise TypeError(f"sigma must be a real number, got {type(sigma).__name__}")
        if not (math.isfinite(sigma) and sigma >= 0):
            raise ValueError(f"sigma must be finite and >= 0, got {sigma!r}")
        self.sigma = sigma
        self.guide_provider = check_guide_provider(guide_provider)
        self.backend = backend

    def _path(self, x0: Tensor, x1: Tensor, t: Tensor, guides: Tensor | None, orders: tuple[int, ...]):
        guides = resolve_guides(guides, self.guide_provider, x0, x1)
        return bezier(x0, x1, t, guides, orders=orders, backend=self.backend)

    def compute_mu_t(self, x0: Tensor, x1: Tensor, t: Tensor, guides: Tensor | None = None) -> Tensor:
        """Mean of the path at t: B(t), [B, *F]."""
        return self._path(x0, x1, t, guides, (0,))[0]

    def compute_sigma_t(self, t: Tensor) -> float:
        """Standard deviation of the path: the constant sigma."""
        del t
        return self.sigma

    def sample_xt(self, x0: Tensor, x1: Tensor, t: Tensor, epsilon: Tensor, guides: Tensor | None = None) -> Tensor:
        """x_t = B(t) + sigma * epsilon, [B, *F]; epsilon ~ N(0, I) of x0's shape."""
        return self.compute_mu_t(x0, x1, t, guides) + self.compute_sigma_t(t) * epsilon

    def compute_conditional_flow(self, x0: Tensor, x1: Tensor, t: Tensor, xt: Tensor,
                                 guides: Tensor | None = None) -> Tensor:
        """u_t(x | x0, x1) = B'(t), [B, *F] (sigma is constant, so x_t itself does not enter)."""
        del xt
        return self._path(x0, x1, t, guides, (1,))[0]

    def sample_noise_like(self, x: Tensor) -> Tensor:
        return torch.randn_like(x)

    def sample_location_and_conditional_flow(self, x0: Tensor, x1: Tensor, t: Tensor | None = None,
                                             return_noise: bool = False, *, guides: Tensor | None = None):
        """x0, x1 [B, *F]; t [B] or None (drawn uniform on [0, 1] in x0's dtype, as torchcfm does).

        Returns (t, x_t, u_t), or (t, x_t, u_t, epsilon) with return_noise, where
        x_t = B(t) + sigma * epsilon and u_t = B'(t), both from one fused pass over the control points.
        Random draws happen in torchcfm's order: t (when None), then epsilon, then the provider.
        """
        if t is None:
            t = torch.rand(x0.shape[0]).type_as(x0)
        eps = self.sample_noise_like(x0)
        mu_t, ut = self._path(x0, x1, t, guides, (0, 1))
        xt = mu_t + self.compute_sigma_t(t) * eps
        if return_noise:
            return t, xt, ut, eps
        return t, xt, ut
