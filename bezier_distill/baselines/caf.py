"""Constant Acceleration Flow (Park, Lee, Kim, Lee, Hong and Kim 2024) on a teacher's coupling.

A pair (x0, x1) of the coupling is joined by the constant-acceleration path
    x_t = x0 + t v0 + t^2 a / 2,   a = 2 (x1 - x0 - v0),
which is the degree-2 Bezier path with inner control point x0 + v0 / 2: B'(0) = v0, B''(t) = a. So
the paths, their states and the acceleration target (order 2) come from bk.bezier. Two networks, as
in the paper's code (mlvlab/CAF), trained one after the other:
  1. the initial-velocity model v(x_t, t) regresses v0 = v0_scale (x1 - x0) on that path's states
     (v0_scale is the paper's alpha, 1.5 by default; 1 gives the straight line, a = 0);
  2. the acceleration model a(x_t, t, v^) (initial velocity conditioning: its input is the state and
     v^ = v(x0, 0) of the frozen EMA velocity model) regresses a = 2 (x1 - x0 - v^) on the path whose
     inner control point is x0 + v^ / 2, the path the sampler follows.
Both networks are of the students' family (baselines.networks: the MLP, or the UNet for images, the
acceleration model taking [x, v^] stacked). Sampler (N steps, N + 1 evaluations): v^ = v(x0, 0) once, then
    x_{k+1} = x_k + v^ / N + (t_k + 1 / (2N)) a(x_k, t_k, v^) / N,   t_k = k / N,
exact for a constant acceleration (the integral of v^ + a t over the step).
"""
from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import bezier_kernels as bk

from .. import store
from ..checkpoint import model_weights
from ..config import ModelConfig
from ..config.baselines import CAFConfig
from ..models import resolve_model
from ..samplers import uniform_times
from ..stages import record_config
from ..train import TrainResult
from .loop import fit, load_baseline
from .networks import build_network, rebuild

VELOCITY, ACCELERATION = "velocity", "acceleration"  # the two runs inside a CAF run directory


class CAFModel(nn.Module):
    """The two networks of a trained CAF: velocity(x, t) and acceleration(x, t, v0)."""

    def __init__(self, velocity: nn.Module, acceleration: nn.Module):
        super().__init__()
        self.velocity, self.acceleration = velocity, acceleration


def caf_path(x0: Tensor, x1: Tensor, t: Tensor, v0: Tensor, orders: tuple[int, ...],
             backend: str = "auto") -> tuple[Tensor, ...]:
    """The requested orders (position, velocity, acceleration) [B, D] of the CAF path through x0, x1 with
    initial velocity v0 [B, D] at t [B]: the degree-2 Bezier path with guide x0 + v0 / 2."""
    return bk.bezier(x0, x1, t, (x0 + 0.5 * v0)[:, None], orders=orders, backend=backend)


def train_caf(cfg: CAFConfig, model_cfg: ModelConfig, pairs, run_dir: str | Path, *, run_info: dict,
              device: torch.device | str = "cpu", init_weights: dict[str, Tensor] | None = None,
              progress: bool = True) -> TrainResult:
    """The velocity model (run_dir/velocity, from init_weights when given) and then the acceleration model
    (run_dir/acceleration) on the coupling pairs (data.StoredPairs). Returns the acceleration run's result
    with step = the steps of both runs."""
    device, run_dir = torch.device(device), Path(run_dir)
    model_cfg = resolve_model(model_cfg, pairs.shape)
    run_info = {**run_info, "dim": pairs.dim, "shape": list(pairs.shape), "model": asdict(model_cfg),
                "v0_scale": cfg.v0_scale}
    pairs.to(device)

    def times(train, generator: torch.Generator) -> Tensor:
        return torch.rand(train.batch_size, generator=generator).to(device)

    torch.manual_seed(cfg.velocity.seed)
    velocity = build_network("velocity", model_cfg, pairs.shape, "caf.model")
    if init_weights is not None:
        velocity.load_state_dict(init_weights)
    velocity.to(device)

    def velocity_loss(net: nn.Module, step: int, generator: torch.Generator, rows: slice) -> Tensor:
        x0, x1, _ = pairs.batch(cfg.velocity.batch_size)
        t = times(cfg.velocity, generator)
        x0, x1, t = x0[rows], x1[rows], t[rows]
        v0 = cfg.v0_scale * (x1 - x0)
        (xt,) = caf_path(x0, x1, t, v0, (0,), cfg.velocity.backend)
        return F.mse_loss(net(xt, t), v0)

    first = fit(cfg.velocity, velocity, velocity_loss, run_dir / VELOCITY, pairs=pairs, progress=progress,
                run_info={**run_info, "stage": "caf velocity"})
    frozen = first.ema.eval()

    torch.manual_seed(cfg.acceleration.seed)
    acceleration = build_network("acceleration", model_cfg, pairs.shape, "caf.model").to(device)

    def acceleration_loss(net: nn.Module, step: int, generator: torch.Generator, rows: slice) -> Tensor:
        x0, x1, _ = pairs.batch(cfg.acceleration.batch_size)
        t = times(cfg.acceleration, generator)
        x0, x1, t = x0[rows], x1[rows], t[rows]
        with torch.no_grad():
            v0 = frozen(x0, torch.zeros_like(t))
        xt, target = caf_path(x0, x1, t, v0, (0, 2), cfg.acceleration.backend)
        return F.mse_loss(net(xt, t, v0), target)

    second = fit(cfg.acceleration, acceleration, acceleration_loss, run_dir / ACCELERATION, pairs=pairs,
                 progress=progress, run_info={**run_info, "stage": "caf acceleration"})
    return TrainResult(second.model, second.ema, first.step + second.step, first.log + second.log)


def caf_stage(cfg: CAFConfig, coupling: str, model_cfg: ModelConfig, seed: int, init_from: str, out_dir: str,
              device: str = "cpu", progress: bool = True) -> TrainResult:
    """The comparison's CAF stage: both training seeds set to `seed`, on the coupling dataset directory, the
    velocity model from the EMA weights of the run init_from (the teacher; "" for a fresh one)."""
    cfg = replace(cfg, velocity=replace(cfg.velocity, seed=seed), acceleration=replace(cfg.acceleration, seed=seed))
    manifest, pairs = store.load_pairs(coupling, seed)
    init = model_weights(init_from)[0] if init_from else None
    record_config(out_dir, "caf", cfg)
    run_info = {"data": manifest["data"], "pairs": coupling, "init_from": init_from}
    return train_caf(cfg, model_cfg, pairs, out_dir, run_info=run_info, device=device, init_weights=init,
                     progress=progress)


def load_caf(run_dir: str | Path, device: torch.device | str = "cpu") -> CAFModel:
    """Both EMA networks of a CAF run directory, in eval mode."""
    velocity, _ = load_baseline(Path(run_dir) / VELOCITY, lambda run: rebuild("velocity", run), device)
    acceleration, _ = load_baseline(Path(run_dir) / ACCELERATION, lambda run: rebuild("acceleration", run), device)
    return CAFModel(velocity, acceleration).eval()


@torch.no_grad()
def sample_caf(model: CAFModel, x0: Tensor, steps: int, record: bool = False) -> tuple[Tensor, Tensor | None]:
    """CAF's N-step sampler (module docstring): x0 [B, *F] -> samples [B, *F], and with record=True the states
    [B, N+1, *F] at 0, 1/N, ..., 1."""
    times = uniform_times(steps, x0.device).to(x0.dtype)
    batch, h = x0.shape[0], 1.0 / steps
    v0 = model.velocity(x0, times[0].expand(batch))
    x, states = x0, [x0]
    for t in times[:-1]:
        x = x + h * v0 + (t + 0.5 * h) * h * model.acceleration(x, t.expand(batch), v0)
        states.append(x)
    return x, (torch.stack(states, dim=1) if record else None)
