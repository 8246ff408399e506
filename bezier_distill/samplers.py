"""ODE samplers for dx/dt = v(x, t): Euler and Heun over a time grid, batched, without autograd.

A student trained with target "endpoint" predicts f with x1 = x_t + (1 - t) f(x_t, t); an Euler
step of size h moves x_t a fraction h / (1 - t) of the way to that predicted endpoint, so the same
Euler sampler serves both targets: one step from t = 0 is the one-step sample x0 + f(x0, 0), and N
steps re-enter the straight line towards the latest prediction.

That line is the path a k-RF student was trained on, but not the path of a Bezier student: its
training states x_t = B(t; x0, guides, x1) lie on curves. `sample_on_bezier` is the N-step sampler
for endpoint students of Bezier paths: it re-enters the Bezier path through x0, the predicted x1 and
guides predicted from x0 by a guide map (a network trained on the stored control points to give
the guides of x0; the teachers that made them are not run at sampling time). Its cost is the
student's N evaluations plus one guide-map evaluation per sample (none for N = 1).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

import bezier_kernels as bk

Velocity = Callable[[Tensor, Tensor], Tensor]  # v(x [B, D], t [B]) -> [B, D]
METHODS = ("euler", "heun")


def uniform_times(steps: int, device: torch.device | str = "cpu") -> Tensor:
    """The grid 0, 1/N, ..., 1 (float64 [N+1])."""
    return torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64, device=device)


def ode_grid(times: Sequence[float], steps: int) -> Tensor:
    """The uniform N-step grid up to max(times), with every time in `times` on it (float64, sorted).

    A grid point within 1e-9 of a requested time is moved onto it rather than kept beside it.
    """
    grid = uniform_times(steps)
    wanted = torch.tensor(list(times), dtype=torch.float64)
    near = (grid[:, None] - wanted[None, :]).abs() < 1e-9
    hit = near.any(dim=1)
    grid[hit] = wanted[near.int().argmax(dim=1)[hit]]
    grid = torch.unique(torch.cat([grid, wanted]))
    return grid[grid <= wanted.max()]


def evaluations(method: str, intervals: int) -> int:
    """Velocity evaluations per sample of `method` over a grid of `intervals` steps."""
    return intervals * (2 if method == "heun" else 1)


@torch.no_grad()
def solve_ode(velocity: Velocity, x0: Tensor, times: Tensor, method: str = "euler",
              record: bool = False) -> tuple[Tensor, Tensor | None]:
    """Integrates from times[0] to times[-1] through every grid time.

    x0 [B, D]; times [K] increasing (any float dtype; the network sees them in x0's dtype).
    Returns the final state [B, D] and, with record=True, the states at every grid time [B, K, D]
    (the first one is x0).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    x = x0
    states = [x0] if record else None
    times = times.to(device=x0.device, dtype=x0.dtype)
    batch = x0.shape[0]
    for t, t_next in zip(times[:-1], times[1:]):
        h = t_next - t
        v = velocity(x, t.expand(batch))
        if method == "euler":
            x = x + h * v
        else:
            v_next = velocity(x + h * v, t_next.expand(batch))
            x = x + 0.5 * h * (v + v_next)
        if record:
            states.append(x)
    return x, (torch.stack(states, dim=1) if record else None)


def sample(velocity: Velocity, x0: Tensor, steps: int, method: str = "euler") -> Tensor:
    """N uniform steps of `method` from t = 0 to t = 1: x0 [B, D] -> samples [B, D]."""
    return solve_ode(velocity, x0, uniform_times(steps), method)[0]


@torch.no_grad()
def sample_on_bezier(student: Velocity, x0: Tensor, steps: int, guide_map: Velocity | None = None, degree: int = 1,
                     record: bool = False) -> tuple[Tensor, Tensor | None]:
    """N steps of an endpoint student (x1 ~ x_t + (1 - t) f(x_t, t)) that re-enter the Bezier path.

    x0 [B, D]. The guides of x0 come once from guide_map, a network on the stacked [B, (n-1) D] copies
    of x0 at t = 0 trained with target "endpoint" to give the flattened guides (so guides =
    x0 + guide_map(x0, 0) per copy); degree 1 needs none (the path is the line). Step k predicts x1
    from the state at t_k; the state at t_{k+1} is B(t_{k+1}; x0, guides, predicted x1). Returns the last
    prediction [B, D] and, with record=True, the states [B, N+1, D] at 0, 1/N, ..., 1. For a student and
    a guide map that are exact on a family of Bezier paths every state is on the path and every N
    gives the same sample; with N = 2 and degree 1 this is the Euler sampler of the module docstring.
    Images x0 [B, *F] are sampled as the vectors [B, D] of their entries (the student sees [B, *F], the
    guide map the stacked vectors); the sample then has x0's shape and the states are [B, N+1, *F].
    """
    shape = x0.shape
    x0 = x0.flatten(1)
    batch, dim = x0.shape
    times = uniform_times(steps, x0.device).to(x0.dtype)
    guides = None
    if steps > 1 and degree > 1:
        if guide_map is None:
            raise ValueError(f"sample_on_bezier: degree {degree} with {steps} steps needs a guide_map")
        stacked = x0.repeat(1, degree - 1)
        guides = (stacked + guide_map(stacked, times[0].expand(batch))).reshape(batch, degree - 1, dim)
    x, x1 = x0, None
    states = [x0]
    for k in range(steps):
        t = times[k].expand(batch)
        if k > 0:
            (x,) = bk.bezier(x0, x1, t, guides, orders=(0,))
            states.append(x)
        x1 = x + (1 - t)[:, None] * student(x.reshape(shape), t).reshape(batch, dim)
    states.append(x1)
    return x1.reshape(shape), (torch.stack(states, dim=1).reshape(batch, steps + 1, *shape[1:]) if record else None)
