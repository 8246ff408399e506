"""MeanFlow (Geng, Deng, Bai, Kolter and He 2025): an average-velocity network trained from scratch.

Time as in the rest of the project: t = 0 at the source x0, t = 1 at the target x1, states on the line
z_s = (1 - s) x0 + s x1 (bk.bezier, degree 1) with conditional velocity v = x1 - x0. The network
u(z, s, t) is the average velocity from time s to a later time t along the flow through z at s:

    z_t = z_s + (t - s) u(z_s, s, t),   u(z_s, s, t) = 1/(t - s) int_s^t v(z_tau, tau) dtau.

Differentiating (t - s) u = int_s^t v along the flow in s gives the MeanFlow identity in this time
direction, u = v + (t - s) du/ds with du/ds = v . grad_z u + d_s u: a Jacobian-vector product with
tangents (v, 1, 0) for (z, s, t), computed by torch.func.jvp. (The paper runs time the other way, its
t = 1 being the noise: its identity u = v - (t - r) du/dt is this one under s = 1 - t, t = 1 - r,
v -> -v, u -> -u.) The loss regresses u(z_s, s, t) on the stopped target v + (t - s) du/ds with the
adaptive weight 1 / (|delta|^2 + eps)^p (stopped); with s = t the target is v: flow matching.

Times: two logit-normal draws in the paper's time (mean -0.4, std 1); the larger is its t, the
smaller its r, and s = 1 - t, t = 1 - r here; a fraction 1 - mean_ratio of the batch (0.75) takes
r = t. Sampling: N uniform jumps z_{k+1} = z_k + (t_{k+1} - t_k) u(z_k, t_k, t_{k+1}), N evaluations.
The network is of the students' family (baselines.networks: MeanFlowMLP, or MeanFlowUNet for images),
its time features taking s and t - s at unit scale.
"""
from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

import torch
from torch import Tensor, nn

import bezier_kernels as bk

from ..config import DataConfig, ModelConfig
from ..config.baselines import MeanFlowConfig
from ..data import IndependentPairs, resolve_pair
from ..models import resolve_model
from ..samplers import uniform_times
from ..stages import record_config
from ..train import TrainResult
from .loop import fit, load_baseline, unwrapped
from .networks import build_network, rebuild

STAGE = "meanflow"


def build(run: dict) -> nn.Module:
    """The network described by a run's info (shape, model): baselines.networks' MeanFlowMLP or MeanFlowUNet."""
    return rebuild("meanflow", run)


def sample_times(cfg: MeanFlowConfig, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """(s, t) [n] each, s <= t, in this project's time; t > s for a fraction mean_ratio of them on average."""
    draws = torch.sigmoid(cfg.logit_mean + cfg.logit_std * torch.randn(2, n, generator=generator))
    later, earlier = draws.max(dim=0).values, draws.min(dim=0).values  # the paper's t and r
    flow = torch.rand(n, generator=generator) >= cfg.mean_ratio
    earlier = torch.where(flow, later, earlier)
    return 1 - later, 1 - earlier


def meanflow_target(model: nn.Module, z: Tensor, s: Tensor, t: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """(u(z, s, t), the identity's target v + (t - s) du/ds, detached) for z, v [B, *F] and s, t [B].

    u keeps its graph to the parameters; du/ds is the JVP of u with tangents (v, 1, 0), computed (without a
    graph, on the network inside a DistributedDataParallel wrapper) only for the samples with t > s: where
    t = s the target is v whatever du/ds is.
    """
    u = model(z, s, t)
    target = v.detach().clone()
    mean = t > s
    if bool(mean.any()):
        with torch.no_grad():
            _, du_ds = torch.func.jvp(unwrapped(model), (z[mean], s[mean], t[mean]),
                                      (v[mean], torch.ones_like(s[mean]), torch.zeros_like(t[mean])))
        target[mean] += (t - s)[mean].reshape(-1, *[1] * (du_ds.dim() - 1)) * du_ds
    return u, target.detach()


def meanflow_loss(u: Tensor, target: Tensor, power: float, eps: float) -> Tensor:
    """Mean over the batch of w |u - target|^2 (summed over features), w = 1 / (|u - target|^2 + eps)^power stopped."""
    squared = (u - target).square().flatten(1).sum(1)
    return (squared / (squared.detach() + eps).pow(power)).mean()


def train_meanflow(cfg: MeanFlowConfig, model_cfg: ModelConfig, pairs, run_dir: str | Path, *, run_info: dict,
                   device: torch.device | str = "cpu", progress: bool = True,
                   stop_after: int | None = None) -> TrainResult:
    """A MeanFlow network (the MLP or UNet model_cfg names) trained on pairs.batch(size, generator) (independent
    pairs: from scratch) for cfg.train.steps."""
    device, train = torch.device(device), cfg.train
    model_cfg = resolve_model(model_cfg, pairs.shape)
    torch.manual_seed(train.seed)
    model = build_network("meanflow", model_cfg, pairs.shape, "meanflow.model").to(device)
    run_info = {**run_info, "stage": STAGE, "dim": pairs.dim, "shape": list(pairs.shape), "model": asdict(model_cfg)}

    def loss(net: nn.Module, step: int, generator: torch.Generator, rows: slice) -> Tensor:
        x0, x1, _ = pairs.batch(train.batch_size, generator)
        s, t = sample_times(cfg, train.batch_size, generator)
        x0, x1, s, t = (v[rows].to(device) for v in (x0, x1, s, t))
        z, v = bk.bezier(x0, x1, s, orders=(0, 1), backend=train.backend)
        u, target = meanflow_target(net, z, s, t, v)
        return meanflow_loss(u, target, cfg.weight_power, cfg.weight_eps)

    return fit(train, model, loss, run_dir, run_info=run_info, progress=progress, stop_after=stop_after)


def meanflow_stage(cfg: MeanFlowConfig, data: DataConfig, model_cfg: ModelConfig, seed: int, out_dir: str,
                   device: str = "cpu", progress: bool = True) -> TrainResult:
    """The comparison's MeanFlow stage: from scratch on independent pairs of `data`, training seed `seed`."""
    cfg = replace(cfg, train=replace(cfg.train, seed=seed))
    record_config(out_dir, STAGE, cfg)
    return train_meanflow(cfg, model_cfg, IndependentPairs(*resolve_pair(data)), out_dir, device=device,
                          progress=progress, run_info={"data": asdict(data)})


@torch.no_grad()
def sample_meanflow(model: nn.Module, x0: Tensor, steps: int, record: bool = False) -> tuple[Tensor, Tensor | None]:
    """N uniform average-velocity jumps from t = 0 to 1: x0 [B, *F] -> samples [B, *F], and with record=True the
    states [B, N+1, *F] at 0, 1/N, ..., 1."""
    times = uniform_times(steps, x0.device).to(x0.dtype)
    batch, z, states = x0.shape[0], x0, [x0]
    for s, t in zip(times[:-1], times[1:]):
        z = z + (t - s) * model(z, s.expand(batch), t.expand(batch))
        states.append(z)
    return z, (torch.stack(states, dim=1) if record else None)


def load_meanflow(run_dir: str | Path, device: torch.device | str = "cpu") -> nn.Module:
    return load_baseline(run_dir, build, device)[0]
