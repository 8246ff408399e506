"""ODE samplers for dx/dt = v(x, t): Euler and Heun over a time grid, batched, without autograd.

A student trained with target "endpoint" predicts f with x1 = x_t + (1 - t) f(x_t, t); an Euler
step of size h moves x_t a fraction h / (1 - t) of the way to that predicted endpoint, so the same
Euler sampler serves both targets: one step from t = 0 is the one-step sample x0 + f(x0, 0), and N
steps re-enter the straight line towards the latest prediction.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

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
