"""Where an adapter's guides come from: the call's `guides` argument, else the adapter's provider."""
from __future__ import annotations

from typing import Callable, Optional

from torch import Tensor

# (x0 [B, *F], x1 [B, *F]) -> guides [B, n-1, *F], or None for the straight line (degree 1).
GuideProvider = Callable[[Tensor, Tensor], Optional[Tensor]]


def check_guide_provider(provider: object) -> GuideProvider | None:
    if provider is not None and not callable(provider):
        raise TypeError("guide_provider must be None or a callable (x0, x1) -> guides [B, n-1, *F], "
                        f"got {type(provider).__name__}")
    return provider


def resolve_guides(guides: Tensor | None, provider: GuideProvider | None, x0: Tensor, x1: Tensor) -> Tensor | None:
    """Explicit guides win; otherwise the provider's guides for (x0, x1); otherwise None."""
    if guides is None and provider is not None:
        return provider(x0, x1)
    return guides
