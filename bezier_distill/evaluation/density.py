"""Metrics against a target whose structure is known: exact log-density, support and mode coverage.

    mixture_log_density   log p(x) [n] of a Gaussian mixture (data.Mixture), exact (logsumexp over components)
    structure_of          the known structure of a target: its mixture (8gaussians, grid25, gmm_*) or the
                          checkerboard's eight squares; None for the others (moons, rings, digits, normal)
    structure_metrics     per sample x [n, D]: mean log-density (mixtures), fraction in the support, mode
                          coverage and the total-variation error of the mode weights

Modes. A mixture's modes are its components: a sample belongs to the component with the nearest
mean (the Voronoi cell, whose true mass is the component's weight up to the mass the other components
put in it: below 1e-20 for the built-in mixtures) and is in the support when it lies within the
radius holding 99.9% of that component's mass (std * sqrt(chi2 quantile 0.999 with D degrees of
freedom)). The checkerboard's modes are its eight squares (true mass 1/8 each); a sample is in the
support when it lies in one. Mode coverage is the fraction of modes with at least `min_count` samples
in the support, and the TV error is 1/2 sum over cells of |empirical mass - true mass|, where the
cells are the modes plus "elsewhere" (true mass 0 for the checkerboard; mixtures have no such cell).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..data import Distribution, Mixture

SUPPORT_LEVEL = 0.999  # the mass of a component inside its support radius


def _points(x: Tensor, dim: int, name: str) -> Tensor:
    x = x.detach().double().flatten(1)
    if x.shape[1] != dim:
        raise ValueError(f"{name}: samples have {x.shape[1]} features, the target has {dim}")
    return x


def mixture_log_density(x: Tensor, mixture: Mixture) -> Tensor:
    """log p(x) [n] (float64) of samples x [n, D] under the mixture sum_k w_k N(mu_k, std^2 I)."""
    means = mixture.means.double().to(x.device)
    x = _points(x, means.shape[1], "mixture_log_density")
    dim, var = means.shape[1], mixture.std ** 2
    squared = torch.cdist(x, means, compute_mode="donot_use_mm_for_euclid_dist").square()  # [n, K]
    log_normal = -0.5 * squared / var - 0.5 * dim * math.log(2 * math.pi * var)
    return torch.logsumexp(log_normal + mixture.weights.double().to(x.device).log(), dim=1)


def support_radius(std: float, dim: int, level: float = SUPPORT_LEVEL) -> float:
    """The radius of the ball around a mean holding `level` of an isotropic Gaussian's mass in dim dimensions."""
    from scipy.stats import chi2

    return std * math.sqrt(float(chi2.ppf(level, dim)))


@dataclass(frozen=True)
class Structure:
    """A target's modes and support: cells(x) gives each sample's mode index [n] (-1: in no mode's support)
    and weights [K] the modes' true masses; mixture is set when the exact density is known."""

    kind: str                      # "mixture" or "checkerboard"
    weights: Tensor
    mixture: Mixture | None = None

    def cells(self, x: Tensor) -> Tensor:
        if self.mixture is not None:
            means = self.mixture.means.double().to(x.device)
            x = _points(x, means.shape[1], "structure")
            distance, nearest = torch.cdist(x, means, compute_mode="donot_use_mm_for_euclid_dist").min(dim=1)
            inside = distance <= support_radius(self.mixture.std, means.shape[1])
            return torch.where(inside, nearest, -1)
        return checkerboard_cells(x)

    def nearest(self, x: Tensor) -> Tensor:
        """The mode each sample is assigned to for the mode weights [n]: nearest mean (mixtures), else cells(x)."""
        if self.mixture is None:
            return self.cells(x)
        means = self.mixture.means.double().to(x.device)
        return torch.cdist(_points(x, means.shape[1], "structure"), means).argmin(dim=1)


def checkerboard_cells(x: Tensor) -> Tensor:
    """The square of data._checkerboard's board holding each sample x [n, 2]: index 0..7 of the eight squares
    (cells of [-2, 2)^2 with floor(x) + floor(y) even, in row-major order), -1 outside them."""
    x = _points(x, 2, "checkerboard_cells")
    column, row = torch.floor(x[:, 0]), torch.floor(x[:, 1])
    inside = ((column + row).remainder(2) == 0) & (x >= -2).all(1) & (x < 2).all(1)
    index = ((row + 2) * 4 + (column + 2)).long().clamp(0, 15) // 2  # the board's 16 cells, two per square pair
    return torch.where(inside, index, -1)


def structure_of(target: Distribution) -> Structure | None:
    """The known modes of a target distribution (see the module docstring), or None."""
    if target.mixture is not None:
        return Structure("mixture", target.mixture.weights.double(), target.mixture)
    if target.name == "checkerboard":
        return Structure("checkerboard", torch.full((8,), 1 / 8, dtype=torch.float64))
    return None


def structure_metrics(x: Tensor, structure: Structure, min_count: int = 1) -> dict[str, float]:
    """log_density (mixtures: mean log p of the samples), in_support (fraction of samples in a mode's support),
    mode_coverage (fraction of modes with >= min_count samples in their support) and mode_tv (the total-variation
    error of the empirical mode weights) of samples x [n, D]."""
    if x.shape[0] < 1:
        raise ValueError("structure_metrics needs at least one sample")
    n, k = x.shape[0], structure.weights.shape[0]
    cells = structure.cells(x)
    counts = torch.bincount(cells[cells >= 0], minlength=k).double()
    assigned = torch.bincount(structure.nearest(x).clamp(min=0), minlength=k).double()
    if structure.mixture is None:   # the checkerboard: samples off the squares are a cell of true mass 0
        tv = 0.5 * float((counts / n - structure.weights).abs().sum() + (n - counts.sum()) / n)
    else:
        tv = 0.5 * float((assigned / n - structure.weights).abs().sum())
    values = {"in_support": float(counts.sum() / n), "mode_coverage": float((counts >= min_count).double().mean()),
              "mode_tv": tv}
    if structure.mixture is not None:
        values["log_density"] = float(mixture_log_density(x, structure.mixture).mean())
    return values
