"""Teachers: trained velocity networks used as ODEs (dx/dt = v(x, t), x(0) = x0 ~ their source).

A teacher is a training run directory (a 1-RF teacher from train-teacher, or a (k+1)-RF teacher from
reflow): its EMA network, the source distribution it was trained from, and the sha256 of its
checkpoint, which every dataset it makes records. Reflow simulates a k-RF teacher from fresh x0 to
get the deterministic coupling (x0, x1 = ODE(x0)) and trains a (k+1)-RF teacher on straight lines
of it (guides.coupling_maker makes the coupling; stages.reflow trains on it).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor

from .checkpoint import load_model
from .config import SolverConfig
from .data import Distribution, get_distribution
from .models import VelocityMLP
from .samplers import ode_grid, solve_ode


@dataclass
class Teacher:
    run_dir: str
    model: VelocityMLP
    run: dict               # the run description stored in its checkpoint (data, dim, stage, reflow, ...)
    sha256: str             # of its checkpoint tensors: which weights made a dataset

    @property
    def source(self) -> Distribution:
        return get_distribution(self.run["data"]["source"], self.run["dim"])

    @property
    def record(self) -> dict:
        return {"run": self.run_dir, "sha256": self.sha256, "reflow": self.run.get("reflow")}

    def states_at(self, x0: Tensor, times: Sequence[float], solver: SolverConfig) -> Tensor:
        """The ODE states [B, len(times), D] at `times` (increasing, in [0, 1]) from x0 [B, D], solved
        over the solver's uniform N-step grid with `times` put in (samplers.ode_grid)."""
        grid = ode_grid(times, solver.steps)
        if grid.numel() == 1:  # only t = 0
            return x0[:, None].expand(-1, len(times), -1)
        if len(times) == 1:
            return solve_ode(self.model, x0, grid, solver.method)[0][:, None]
        _, states = solve_ode(self.model, x0, grid, solver.method, record=True)
        index = torch.searchsorted(grid, torch.tensor(list(times), dtype=grid.dtype))
        return states[:, index.to(states.device)]


def load_teacher(run_dir: str | Path, device: torch.device | str = "cpu") -> Teacher:
    """The teacher of a run directory with its EMA weights, in eval mode on device."""
    model, state = load_model(run_dir, device, ema=True)
    return Teacher(str(run_dir), model, state["run"], state["tensors"]["sha256"])
