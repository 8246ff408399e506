"""Sample-quality metrics between a sample x [n, D] and a reference sample y [m, D], and path straightness.

    energy_distance       2 E|X - Y| - E|X - X'| - E|Y - Y'|
    mmd_rbf               squared maximum mean discrepancy, Gaussian kernel, median-heuristic bandwidth
    sliced_wasserstein2   W2 of the 1-D projections on many random directions (exact 1-D W2 per direction)
    wasserstein2          exact W2 of the two empirical measures (POT's network simplex, else a Hungarian solve)
    frechet_distance      ||mu_x - mu_y||^2 + Tr(S_x + S_y - 2 (S_x S_y)^(1/2)) of the Gaussian fits (FID's formula;
                          bezier_distill.evaluation.classifier gives the digits' feature space)
    straightness          E_t ||(x_1 - x_0) - v_t||^2 along a sampler's recorded path (Rectified Flow)

Everything is computed in float64 on the inputs' device and returned as a Python float. Samples of
images or other feature shapes are flattened to [n, D]. Distances are Euclidean.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor


def _pair(x: Tensor, y: Tensor, name: str, least: int = 2) -> tuple[Tensor, Tensor]:
    """x, y as float64 [n, D], [m, D] with the same D and at least `least` samples each; ValueError otherwise."""
    x, y = x.detach().double().flatten(1), y.detach().double().flatten(1)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"{name}: x has {x.shape[1]} features, y has {y.shape[1]}")
    if x.shape[0] < least or y.shape[0] < least:
        raise ValueError(f"{name} needs at least {least} samples on each side, got {x.shape[0]} and {y.shape[0]}")
    return x, y.to(x.device)


def _distances(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise Euclidean distances [n, m], computed directly (exact zeros for equal points, unlike the
    matmul form |a|^2 + |b|^2 - 2 a.b that torch.cdist otherwise picks for large inputs)."""
    return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")


def _kernel_discrepancy(kxx: Tensor, kyy: Tensor, kxy: Tensor, unbiased: bool) -> float:
    """E k(X, X') + E k(Y, Y') - 2 E k(X, Y) from the three kernel matrices; the within-set means leave out the
    diagonal when unbiased (U-statistics: zero in expectation for one distribution), else keep it
    (V-statistic: never negative, and exactly zero for identical sets)."""
    n, m = kxx.shape[0], kyy.shape[0]
    if unbiased:
        within_x = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
        within_y = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    else:
        within_x, within_y = kxx.mean(), kyy.mean()
    return float(within_x + within_y - 2 * kxy.mean())


def energy_distance(x: Tensor, y: Tensor, unbiased: bool = True) -> float:
    """Squared energy distance 2 E|X - Y| - E|X - X'| - E|Y - Y'| between samples x [n, D] and y [m, D].

    The energy distance is the kernel discrepancy of k(a, b) = -|a - b|. unbiased=True (default) leaves
    the zero diagonal out of the within-set means: zero in expectation when both samples come from one
    distribution (it can be slightly negative), positive otherwise. unbiased=False is the V-statistic,
    which is >= 0 and exactly 0 for identical sets.
    """
    x, y = _pair(x, y, "energy_distance")
    return _kernel_discrepancy(-_distances(x, x), -_distances(y, y), -_distances(x, y), unbiased)


def median_bandwidth(x: Tensor, y: Tensor) -> float:
    """The median heuristic: the median of the nonzero Euclidean distances between points of the pooled
    sample (of at most the first 1000 points of each side); 1.0 when all points coincide."""
    x, y = _pair(x, y, "median_bandwidth", least=1)
    distances = torch.pdist(torch.cat([x[:1000], y[:1000]]))
    distances = distances[distances > 0]
    return float(distances.median()) if distances.numel() else 1.0


def mmd_rbf(x: Tensor, y: Tensor, bandwidth: float | None = None, unbiased: bool = True) -> float:
    """Squared MMD with the Gaussian kernel k(a, b) = exp(-|a - b|^2 / (2 bandwidth^2)).

    bandwidth None takes the median heuristic (median_bandwidth of the pooled sample), which is
    symmetric in x and y. unbiased as in energy_distance.
    """
    x, y = _pair(x, y, "mmd_rbf")
    sigma = median_bandwidth(x, y) if bandwidth is None else float(bandwidth)
    if not sigma > 0:
        raise ValueError(f"mmd_rbf: bandwidth must be > 0, got {sigma}")

    def kernel(a: Tensor, b: Tensor) -> Tensor:
        return torch.exp(-_distances(a, b).square() / (2 * sigma**2))

    return _kernel_discrepancy(kernel(x, x), kernel(y, y), kernel(x, y), unbiased)


def _quantile_w2_squared(a: Tensor, b: Tensor) -> Tensor:
    """Exact squared W2 between the empirical measures of the rows of a [P, n] and b [P, m] (1-D each):
    the integral over u in (0, 1) of (F_a^-1(u) - F_b^-1(u))^2 with both quantile functions piecewise
    constant, summed over the union of their breakpoints k/n and l/m. Returns [P]."""
    n, m = a.shape[1], b.shape[1]
    a, b = a.sort(dim=1).values, b.sort(dim=1).values
    if n == m:
        return (a - b).square().mean(dim=1)
    levels = torch.cat([torch.arange(1, n + 1, device=a.device, dtype=torch.float64) / n,
                        torch.arange(1, m + 1, device=a.device, dtype=torch.float64) / m]).unique()  # sorted, ends at 1
    widths = torch.diff(levels, prepend=levels.new_zeros(1))
    middle = levels - widths / 2
    index_a = (middle * n).floor().long().clamp(max=n - 1)
    index_b = (middle * m).floor().long().clamp(max=m - 1)
    return ((a[:, index_a] - b[:, index_b]).square() * widths).sum(dim=1)


def random_directions(count: int, dim: int, generator: torch.Generator | None = None) -> Tensor:
    """count unit vectors [count, dim] uniform on the sphere (normalised Gaussians), float64 on the CPU."""
    directions = torch.randn(count, dim, generator=generator, dtype=torch.float64)
    return directions / directions.norm(dim=1, keepdim=True)


def sliced_wasserstein2(x: Tensor, y: Tensor, projections: int = 512, generator: torch.Generator | None = None,
                        directions: Tensor | None = None) -> float:
    """Sliced W2: sqrt(E_theta W2^2(theta . X, theta . Y)) over directions theta uniform on the sphere.

    All projections are done in one matmul and each 1-D W2 is exact (any n and m). directions [P, D]
    (rows are normalised) replaces the `projections` random ones drawn from generator. For y = x + mu
    it equals |mu| / sqrt(D) in expectation over theta (exactly |mu| in 1-D).
    """
    x, y = _pair(x, y, "sliced_wasserstein2", least=1)
    if directions is None:
        if projections < 1:
            raise ValueError(f"sliced_wasserstein2: projections must be >= 1, got {projections}")
        directions = random_directions(projections, x.shape[1], generator)
    directions = directions.to(x.device, torch.float64)
    if directions.dim() != 2 or directions.shape[1] != x.shape[1]:
        raise ValueError(f"sliced_wasserstein2: directions must be [P, {x.shape[1]}], got {list(directions.shape)}")
    directions = directions / directions.norm(dim=1, keepdim=True)
    return math.sqrt(float(_quantile_w2_squared(directions @ x.T, directions @ y.T).mean()))


def wasserstein2(x: Tensor, y: Tensor, method: str = "auto") -> float:
    """Exact W2 between the uniform empirical measures of x [n, D] and y [m, D] (squared Euclidean cost).

    method "pot" solves the transport problem with POT (`ot.emd2`, any n and m), "hungarian" solves the
    assignment problem with scipy.optimize.linear_sum_assignment (n == m only), "auto" takes POT when it
    is installed. Cost O(n^3): meant for a few thousand points.
    """
    x, y = _pair(x, y, "wasserstein2", least=1)
    if method == "auto":
        try:
            import ot  # noqa: F401
            method = "pot"
        except ImportError:
            method = "hungarian"
    cost = _distances(x, y).square().cpu().numpy()
    if method == "pot":
        import numpy as np

        try:
            import ot
        except ImportError:
            raise ImportError("wasserstein2 with method 'pot' needs POT: pip install POT") from None
        n, m = cost.shape
        squared = ot.emd2(np.full(n, 1.0 / n), np.full(m, 1.0 / m), cost, numItermax=10_000_000)
    elif method == "hungarian":
        from scipy.optimize import linear_sum_assignment

        if cost.shape[0] != cost.shape[1]:
            raise ValueError(f"wasserstein2 with method 'hungarian' needs equal sample sizes, got {cost.shape} "
                             "(install POT for unequal ones)")
        rows, cols = linear_sum_assignment(cost)
        squared = cost[rows, cols].mean()
    else:
        raise ValueError(f"wasserstein2: method must be 'auto', 'pot' or 'hungarian', got {method!r}")
    return math.sqrt(max(float(squared), 0.0))


def gaussian_frechet(mean_x: Tensor, cov_x: Tensor, mean_y: Tensor, cov_y: Tensor) -> float:
    """Squared W2 between N(mean_x, cov_x) and N(mean_y, cov_y):
    |mean_x - mean_y|^2 + Tr(cov_x + cov_y - 2 (cov_x^1/2 cov_y cov_x^1/2)^1/2), via symmetric eigensolves."""
    mean_x, cov_x, mean_y, cov_y = (v.double() for v in (mean_x, cov_x, mean_y, cov_y))
    values, vectors = torch.linalg.eigh(cov_x)
    root_x = (vectors * values.clamp(min=0).sqrt()) @ vectors.T
    middle = root_x @ cov_y @ root_x
    cross = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    return float((mean_x - mean_y).square().sum() + cov_x.trace() + cov_y.trace() - 2 * cross)


def frechet_distance(x: Tensor, y: Tensor) -> float:
    """The Frechet distance (FID's formula) between the Gaussian fits (mean, covariance with n - 1) of
    features x [n, F] and y [m, F]. Identical sets give 0 (to rounding); y = x + mu gives |mu|^2."""
    x, y = _pair(x, y, "frechet_distance")
    return gaussian_frechet(x.mean(0), torch.cov(x.T).reshape(x.shape[1], x.shape[1]),
                            y.mean(0), torch.cov(y.T).reshape(y.shape[1], y.shape[1]))


def straightness(states: Tensor, times: Tensor) -> float:
    """Rectified Flow's straightness E_t E ||(x_1 - x_0) - v_t||^2 of a sampler's path (0: straight lines
    travelled at constant speed).

    states [B, K+1, D] are the sampler's states at times [K+1] (increasing, from t_0 to t_K); on each
    step the velocity is the step's mean v_k = (x_{k+1} - x_k) / (t_{k+1} - t_k) (for Euler, the network's
    output), and the time average weights step k by its length. The norm is summed over features and
    averaged over the batch; x_1 - x_0 is the displacement over the whole path per unit time.
    """
    if states.dim() != 3 or times.dim() != 1 or states.shape[1] != times.shape[0] or times.shape[0] < 2:
        raise ValueError(f"straightness needs states [B, K+1, D] and times [K+1] with K >= 1, "
                         f"got {list(states.shape)} and {list(times.shape)}")
    states, times = states.detach().double(), times.detach().double().to(states.device)
    steps = torch.diff(times)
    span = times[-1] - times[0]
    velocity = torch.diff(states, dim=1) / steps[None, :, None]
    chord = (states[:, -1] - states[:, 0]) / span
    deviation = (chord[:, None] - velocity).square().sum(dim=2).mean(dim=0)  # [K]
    return float((deviation * steps).sum() / span)
