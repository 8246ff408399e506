"""Improved precision and recall (Kynkäänniemi et al. 2019): k-nearest-neighbour manifolds of two samples.

The manifold of a sample is the union of balls around its points, each ball's radius the distance
to that point's k-th nearest neighbour within the sample (the point itself not counted). Precision is
the fraction of generated points inside the real manifold (are the samples realistic?), recall the
fraction of real points inside the generated manifold (is the target covered?). A point on a ball's
boundary is inside. Computed in float64 with exact pairwise distances; for images pass features
(bezier_distill.evaluation.classifier), as the paper does with a network's embeddings.
"""
from __future__ import annotations

from torch import Tensor

from .metrics import _distances, _pair


def knn_radii(x: Tensor, k: int) -> Tensor:
    """Distance of every point of x [n, D] to its k-th nearest other point [n] (float64); needs n > k."""
    if not 1 <= k < x.shape[0]:
        raise ValueError(f"knn_radii needs 1 <= k < n, got k={k} and n={x.shape[0]}")
    distances = _distances(x, x)
    distances.fill_diagonal_(float("inf"))  # a point is not its own neighbour (duplicates still are)
    return distances.kthvalue(k, dim=1).values


def coverage_of(points: Tensor, centres: Tensor, radii: Tensor) -> float:
    """Fraction of points [m, D] within radii [n] of at least one of centres [n, D]."""
    return float((_distances(points, centres) <= radii[None, :]).any(dim=1).double().mean())


def precision_recall(real: Tensor, fake: Tensor, k: int = 3) -> tuple[float, float]:
    """(precision, recall) of generated samples fake [m, D] against real samples real [n, D], k-NN radii."""
    real, fake = _pair(real, fake, "precision_recall", least=k + 1)
    precision = coverage_of(fake, real, knn_radii(real, k))
    recall = coverage_of(real, fake, knn_radii(fake, k))
    return precision, recall
