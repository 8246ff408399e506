"""The velocity networks: the MLP (vectors), the conv UNet (images, bezier_distill.unet) or a user's factory.

build_model(cfg, shape) makes the network that a ModelConfig names for data of feature shape F:
kind "auto" is the UNet for F = [C, H, W] and the MLP otherwise; `factory: "package.module:function"`
calls the user's function with F (a tuple) instead, and checks that what it returns is an nn.Module
f(x [B, *F], t [B]) -> [B, *F].
"""
from __future__ import annotations

import importlib
import math
from dataclasses import replace
from typing import Sequence

import torch
from torch import Tensor, nn

from .config import ModelConfig
from .embedding import SinusoidalTimeEmbedding
from .errors import field_error
from .unet import UNet

# MLP (width, depth) for data of at most 8 dimensions (the 2-D toys) and above (the 64-pixel digits);
# UNet (width, blocks per level, levels)
PRESETS = {"toy": (256, 3), "image": (512, 4), "unet": (32, 1, 2)}

__all__ = ["PRESETS", "SinusoidalTimeEmbedding", "UNet", "VelocityMLP", "build_model", "call_factory", "model_kind",
           "resolve_model"]


def model_kind(cfg: ModelConfig, shape: Sequence[int]) -> str:
    """"mlp" or "unet" (kind "auto": the UNet for feature shapes [C, H, W]), or "factory"."""
    if cfg.factory:
        return "factory"
    if cfg.kind != "auto":
        return cfg.kind
    return "unet" if len(shape) == 3 else "mlp"


def resolve_model(cfg: ModelConfig, shape: Sequence[int] | int) -> ModelConfig:
    """cfg with kind, width, depth and levels filled in from the presets for data of feature shape `shape`."""
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    kind = model_kind(cfg, shape)
    if kind == "factory":
        return cfg
    if kind == "unet":
        width, depth, levels = PRESETS["unet"]
        return replace(cfg, kind=kind, width=cfg.width or width, depth=depth if cfg.depth is None else cfg.depth,
                       levels=levels if cfg.levels is None else cfg.levels)
    width, depth = PRESETS["toy" if math.prod(shape) <= 8 else "image"]
    return replace(cfg, kind=kind, width=cfg.width or width, depth=depth if cfg.depth is None else cfg.depth)


class ResidualBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, h: Tensor, time: Tensor) -> Tensor:
        return h + self.mlp(self.norm(h) + time)


class VelocityMLP(nn.Module):
    """v(x, t): x [B, *F] with dim = prod(F) entries, t [B] -> [B, *F] (features flattened inside).

    The time embedding enters every residual block. The output layer starts at zero, so an untrained
    network predicts v = 0.
    """

    def __init__(self, dim: int, width: int, depth: int, time_features: int = 64):
        super().__init__()
        self.dim = dim
        self.time_embedding = SinusoidalTimeEmbedding(time_features)
        self.time_mlp = nn.Sequential(nn.Linear(time_features, width), nn.SiLU(), nn.Linear(width, width))
        self.input = nn.Linear(dim, width)
        self.blocks = nn.ModuleList(ResidualBlock(width) for _ in range(depth))
        self.output = nn.Sequential(nn.LayerNorm(width), nn.SiLU(), nn.Linear(width, dim))
        nn.init.zeros_(self.output[-1].weight)
        nn.init.zeros_(self.output[-1].bias)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        time = self.time_mlp(self.time_embedding(t))
        return self.trunk(self.input(x.reshape(x.shape[0], self.dim)), time).reshape(x.shape)

    def trunk(self, h: Tensor, time: Tensor) -> Tensor:
        """The residual blocks and the output layer on the embedded input h [B, width] and time [B, width]:
        [B, dim] (for subclasses whose input or time embedding differs)."""
        h = h + time
        for block in self.blocks:
            h = block(h, time)
        return self.output(h)


def call_factory(factory: str, shape: Sequence[int], where: str = "model.factory") -> nn.Module:
    """The network that "package.module:function" builds for feature shape `shape`, checked to be an nn.Module
    f(x [B, *F], t [B]) whose output has x's shape; ConfigError naming the field `where` otherwise."""
    module_name, _, function_name = factory.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as error:
        raise field_error(where, f"cannot import {factory!r}: {' '.join(str(error).split())}") from None
    try:
        network = function(tuple(shape))
    except Exception as error:
        raise field_error(where, f"{factory!r} failed when called with the feature shape {tuple(shape)}: "
                                 f"{type(error).__name__}: {' '.join(str(error).split())}") from None
    if not isinstance(network, nn.Module):
        raise field_error(where, f"{factory!r} returned a {type(network).__name__}, not an nn.Module")
    check_output_shape(network, shape, where, factory)
    return network


def check_output_shape(network: nn.Module, shape: Sequence[int], where: str, name: str) -> None:
    """Runs network on two zero inputs [2, *F] at t = 0.5; ConfigError when its output is not [2, *F]."""
    try:
        parameter = next(network.parameters(), None)
        device = parameter.device if parameter is not None else torch.device("cpu")
        with torch.no_grad():
            out = network(torch.zeros(2, *shape, device=device), torch.full((2,), 0.5, device=device))
    except Exception as error:
        raise field_error(where, f"{name} failed on an input [2, {', '.join(map(str, shape))}]: "
                                 f"{type(error).__name__}: {' '.join(str(error).split())}") from None
    if not isinstance(out, Tensor) or tuple(out.shape) != (2, *shape):
        got = list(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise field_error(where, f"{name} maps an input [2, {', '.join(map(str, shape))}] to {got}; the output must "
                                 "have the input's shape")


def build_model(cfg: ModelConfig, shape: Sequence[int] | int, where: str = "model", *,
                mlp: type[VelocityMLP] = VelocityMLP, unet: type[UNet] = UNet) -> nn.Module:
    """A fresh network for data of feature shape `shape` (an int: vectors), initialised from torch's global RNG.

    mlp, unet: the classes built for kinds "mlp" and "unet" (subclasses taking the same arguments, such as
    the baselines' networks with extra inputs).
    """
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    if cfg.factory:
        return call_factory(cfg.factory, shape, f"{where}.factory")
    cfg = resolve_model(cfg, shape)
    if cfg.kind == "unet":
        if len(shape) != 3:
            raise field_error(f"{where}.kind", f"the UNet needs images [C, H, W], the data have feature shape "
                                               f"{list(shape)}")
        return unet(shape, cfg.width, cfg.levels, max(cfg.depth, 1), cfg.time_features)
    return mlp(math.prod(shape), cfg.width, cfg.depth, cfg.time_features)
