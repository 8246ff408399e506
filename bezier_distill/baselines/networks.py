"""The baselines' networks, in the same two families as the students' (the MLP for vectors, the UNet for images):

    velocity      v(x, t)          the students' network (models.build_model): CAF's initial-velocity model
    acceleration  a(x, t, v0)      CAF's acceleration model, conditioned on the initial velocity v0 [B, *F]:
                                   the MLP on the flattened [x, v0], the UNet on x and v0 stacked as channels
    meanflow      u(z, s, t)       MeanFlow's average velocity from time s to t: the network of v(x, t) whose time
                                   input is the embedding of s plus a second embedding (its own MLP) of t - s

`build_network(role, model_cfg, shape)` builds a fresh one for data of feature shape F; `rebuild(role, run)`
builds one from the run info a baseline's checkpoint holds (shape and model). A user's factory network
(model.factory) has the form f(x, t) only, so it serves the velocity role and no other.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from ..config import ModelConfig
from ..errors import field_error
from ..models import UNet, VelocityMLP, build_model

# MeanFlow's time features see s and t - s at unit scale, not the students' 1000 t: the MeanFlow target
# differentiates the network in s, and at 1000 t the fastest features turn ~160 times over [0, 1], so du/ds (and
# the target) is large and noisy. On the Gaussian-to-Gaussian test (500 steps) the one-step error |x - T(x0)|^2 is
# 0.74 at the students' scale and 0.06 at unit scale.
TIME_SCALE = 1e-3

ROLES = ("velocity", "acceleration", "meanflow")


class AccelerationMLP(VelocityMLP):
    """a(x, t, v0): x, v0 [B, *F], t [B] -> [B, *F]. The VelocityMLP of the same width and depth on the
    flattened [x, v0]."""

    def __init__(self, dim: int, width: int, depth: int, time_features: int = 64):
        super().__init__(dim, width, depth, time_features)
        self.input = nn.Linear(2 * dim, width)

    def forward(self, x: Tensor, t: Tensor, v0: Tensor) -> Tensor:
        h = self.input(torch.cat([x.flatten(1), v0.flatten(1)], dim=1))
        return self.trunk(h, self.time_mlp(self.time_embedding(t))).reshape(x.shape)


class AccelerationUNet(UNet):
    """a(x, t, v0): x, v0 [B, C, H, W], t [B] -> [B, C, H, W]. The UNet of the same width and levels on the
    2C channels of x and v0 stacked."""

    def __init__(self, shape: tuple[int, int, int], width: int = 32, levels: int = 2, blocks: int = 1,
                 time_features: int = 64):
        super().__init__(shape, width, levels, blocks, time_features, in_channels=2 * shape[0])

    def forward(self, x: Tensor, t: Tensor, v0: Tensor) -> Tensor:
        time = self.time_mlp(self.time_embedding(t.reshape(-1).expand(x.shape[0])))
        return self.body(torch.cat([x, v0], dim=1), time)


class MeanFlowMLP(VelocityMLP):
    """u(z, s, t): z [B, *F], s and t [B] -> [B, *F]. The VelocityMLP of the same width and depth, whose time
    input is the embedding of TIME_SCALE s plus an embedding of TIME_SCALE (t - s) through its own MLP."""

    def __init__(self, dim: int, width: int, depth: int, time_features: int = 64):
        super().__init__(dim, width, depth, time_features)
        self.interval_mlp = nn.Sequential(nn.Linear(time_features, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, z: Tensor, s: Tensor, t: Tensor) -> Tensor:
        time = (self.time_mlp(self.time_embedding(TIME_SCALE * s))
                + self.interval_mlp(self.time_embedding(TIME_SCALE * (t - s))))
        return self.trunk(self.input(z.reshape(z.shape[0], self.dim)), time).reshape(z.shape)


class MeanFlowUNet(UNet):
    """u(z, s, t): z [B, C, H, W], s and t [B] -> [B, C, H, W]. The UNet of the same width and levels with
    MeanFlowMLP's time input (the embeddings of s and of t - s, each through its own MLP, summed)."""

    def __init__(self, shape: tuple[int, int, int], width: int = 32, levels: int = 2, blocks: int = 1,
                 time_features: int = 64):
        super().__init__(shape, width, levels, blocks, time_features)
        self.interval_mlp = nn.Sequential(nn.Linear(time_features, 4 * width), nn.SiLU(),
                                          nn.Linear(4 * width, 4 * width))

    def forward(self, z: Tensor, s: Tensor, t: Tensor) -> Tensor:
        s, t = s.reshape(-1).expand(z.shape[0]), t.reshape(-1).expand(z.shape[0])
        time = (self.time_mlp(self.time_embedding(TIME_SCALE * s))
                + self.interval_mlp(self.time_embedding(TIME_SCALE * (t - s))))
        return self.body(z, time)


CLASSES = {"velocity": (VelocityMLP, UNet), "acceleration": (AccelerationMLP, AccelerationUNet),
           "meanflow": (MeanFlowMLP, MeanFlowUNet)}


def build_network(role: str, model_cfg: ModelConfig, shape: Sequence[int], where: str = "model") -> nn.Module:
    """A fresh network of the role ("velocity", "acceleration" or "meanflow") in the family model_cfg names
    for data of feature shape `shape`, initialised from torch's global RNG."""
    if role not in CLASSES:
        raise ValueError(f"unknown baseline network role {role!r} (known: {', '.join(ROLES)})")
    if model_cfg.factory and role != "velocity":
        raise field_error(f"{where}.factory", f"a factory network is f(x, t); the {role} network of a baseline "
                                              "takes more inputs: use model.kind 'mlp' or 'unet' for the baselines")
    mlp, unet = CLASSES[role]
    return build_model(model_cfg, tuple(shape), where, mlp=mlp, unet=unet)


def rebuild(role: str, run: dict) -> nn.Module:
    """The network a baseline checkpoint's run info describes: its feature shape ("shape"; runs made before
    it was recorded have "dim" only: vectors) and its resolved model config ("model")."""
    shape = run.get("shape") or [run["dim"]]
    return build_network(role, ModelConfig(**run["model"]), shape)
