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
from typing import Callable, Sequence

import torch
from torch import Tensor

from .checkpoint import load_model
from .config import DataConfig, SolverConfig
from .data import Distribution, get_distribution, resolve_pair
from .errors import field_error
from .files import sha256_file
from .models import call_factory
from .samplers import ode_grid, solve_ode

Velocity = Callable[[Tensor, Tensor], Tensor]  # v(x [B, *F], t [B]) -> [B, *F], t = 0 at the source, 1 at the target


def states_at(velocity: Velocity, x0: Tensor, times: Sequence[float], solver: SolverConfig) -> Tensor:
    """The ODE states [B, len(times), *F] of dx/dt = velocity(x, t) at `times` (increasing, in [0, 1]) from
    x0 [B, *F], solved over the solver's uniform N-step grid with `times` put in (samplers.ode_grid)."""
    grid = ode_grid(times, solver.steps)
    if grid.numel() == 1:  # only t = 0
        return x0[:, None].expand(-1, len(times), *x0.shape[1:])
    if len(times) == 1:
        return solve_ode(velocity, x0, grid, solver.method)[0][:, None]
    _, states = solve_ode(velocity, x0, grid, solver.method, record=True)
    index = torch.searchsorted(grid, torch.tensor(list(times), dtype=grid.dtype))
    return states[:, index.to(states.device)]


def velocity_device(velocity: Velocity, default: torch.device | str = "cpu") -> torch.device:
    """The device of a teacher's parameters (an nn.Module with some), else `default`."""
    parameters = getattr(velocity, "parameters", None)
    first = next(parameters(), None) if callable(parameters) else None
    return first.device if first is not None else torch.device(default)


@dataclass
class Teacher:
    run_dir: str
    model: torch.nn.Module
    run: dict               # the run description stored in its checkpoint (data, dim, stage, reflow, ...)
    sha256: str             # of its checkpoint tensors (or weights file): which weights made a dataset
    external: dict | None = None  # an outside teacher: {"factory", "weights"} (run_dir is then "")

    @property
    def source(self) -> Distribution:
        return get_distribution(self.run["data"]["source"], shape=self.shape)

    @property
    def record(self) -> dict:
        return {"run": self.run_dir or None, "sha256": self.sha256, "reflow": self.run.get("reflow"),
                **({"external": self.external} if self.external else {})}

    def states_at(self, x0: Tensor, times: Sequence[float], solver: SolverConfig) -> Tensor:
        """states_at(self.model, ...): the ODE states [B, len(times), *F] at `times`."""
        return states_at(self.model, x0, times, solver)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.run.get("shape", [self.run["dim"]]))


def load_teacher(run_dir: str | Path, device: torch.device | str = "cpu") -> Teacher:
    """The teacher of a run directory with its EMA weights, in eval mode on device."""
    model, state = load_model(run_dir, device, ema=True)
    return Teacher(str(run_dir), model, state["run"], state["tensors"]["sha256"])


def read_state_dict(path: str | Path, where: str) -> dict[str, Tensor]:
    """The state dict in a .pt or .safetensors file; ConfigError naming field `where` when it is not one."""
    path = Path(path)
    if path.suffix not in (".pt", ".pth", ".safetensors"):
        raise field_error(where, f"'{path}': expected a .pt or .safetensors state dict")
    if not path.is_file():
        raise field_error(where, f"weights file '{path}' does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            weights = load_file(str(path))
        else:
            weights = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise field_error(where, f"cannot read '{path}': {' '.join(str(error).split())}") from None
    if not isinstance(weights, dict) or not all(isinstance(v, Tensor) for v in weights.values()):
        raise field_error(where, f"'{path}' does not hold a state dict (a mapping of names to tensors)")
    return weights


def load_external_teacher(factory: str, weights: str, data: DataConfig, device: torch.device | str = "cpu",
                          section: str = "guides") -> Teacher:
    """An outside teacher: the network that `factory` ("package.module:function", called with the feature shape
    of data.source) builds, with the state dict in `weights`, as a Teacher from data.source to data.target.
    Errors name {section}.teacher_model, {section}.teacher_weights or {section}.teacher_data.*."""
    source, _ = resolve_pair(data)
    network = call_factory(factory, source.features, f"{section}.teacher_model")
    try:
        network.load_state_dict(read_state_dict(weights, f"{section}.teacher_weights"))
    except RuntimeError as error:
        raise field_error(f"{section}.teacher_weights", f"'{weights}' does not fit {factory!r}: "
                          f"{' '.join(str(error).split())[:300]}") from None
    run = {"data": {"source": data.source, "target": data.target}, "dim": source.dim, "shape": list(source.features),
           "model": {"factory": factory}, "reflow": None, "stage": "external"}
    return Teacher("", network.to(device).eval().requires_grad_(False), run, sha256_file(weights),
                   external={"factory": factory, "weights": str(weights)})
