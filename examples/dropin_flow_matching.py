"""Bezier paths inside facebookresearch/flow_matching: its 2-D training loop, two lines changed.

The loop, model and ODESolver sampling follow flow_matching's examples/2d_flow_matching.ipynb
(checkerboard data, MLP velocity field). The swap: the CondOT path becomes a BezierProbPath whose
guide provider bends every path (toy2d.bend_sideways).
Runs on a CPU in seconds:  python examples/dropin_flow_matching.py [--steps 600]
"""
import argparse

import torch
from flow_matching.solver import ODESolver
from flow_matching.utils import ModelWrapper
from torch import nn
from toy2d import bend_sideways, checkerboard, report

from bezier_kernels.integrations import BezierProbPath  # CHANGED: was  from flow_matching.path import CondOTProbPath


class MLP(nn.Module):
    def __init__(self, hidden_dim: int = 64):
        super().__init__()
        self.main = nn.Sequential(nn.Linear(3, hidden_dim), nn.SiLU(), nn.Linear(hidden_dim, hidden_dim), nn.SiLU(),
                                  nn.Linear(hidden_dim, hidden_dim), nn.SiLU(), nn.Linear(hidden_dim, 2))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = t.reshape(-1, 1).float().expand(x.shape[0], 1)  # the ODE solver passes a scalar t
        return self.main(torch.cat([x, t], dim=1))


class WrappedModel(ModelWrapper):
    def forward(self, x: torch.Tensor, t: torch.Tensor, **extras) -> torch.Tensor:
        return self.model(x, t)


def train(path, steps: int, batch_size: int = 512, seed: int = 0) -> tuple[MLP, list[float]]:
    """flow_matching's training loop on `path` (any ProbPath). Returns the model and its loss per step."""
    torch.manual_seed(seed)
    vf = MLP()
    optim = torch.optim.Adam(vf.parameters(), lr=1e-3)
    losses = []
    for _ in range(steps):
        x_1 = checkerboard(batch_size)
        x_0 = torch.randn_like(x_1)
        t = torch.rand(x_1.shape[0])
        path_sample = path.sample(t=t, x_0=x_0, x_1=x_1)
        loss = torch.pow(vf(path_sample.x_t, path_sample.t) - path_sample.dx_t, 2).mean()
        optim.zero_grad()
        loss.backward()
        optim.step()
        losses.append(loss.item())
    return vf, losses


def sample(vf: MLP, x_init: torch.Tensor) -> torch.Tensor:
    """Integrates the learned field from x_init at t = 0 to t = 1 with flow_matching's ODESolver."""
    with torch.no_grad():
        return ODESolver(velocity_model=WrappedModel(vf)).sample(x_init=x_init, step_size=0.05, method="midpoint")


def main(steps: int = 600) -> float:
    path = BezierProbPath(guide_provider=bend_sideways)  # CHANGED: was  path = CondOTProbPath()
    vf, losses = train(path, steps)
    for i in range(0, steps, max(1, steps // 5)):
        print(f"step {i + 1:5d}  loss {losses[i]:.3f}")
    x_init = torch.randn(2000, 2)
    return report(sample(vf, x_init), x_init, checkerboard(2000))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    main(parser.parse_args().steps)
