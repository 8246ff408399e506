"""The config sections that several stages share: data, network, training, ODE solver, generation.

Each is a small dataclass whose checks() yields (field, problem-or-None) pairs about its own values;
nothing here reads files or data sets (a stage checks names and paths when it starts).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..errors import need


@dataclass
class DataConfig:
    """Source (x0) and target (x1) distributions by name (bezier_distill.data; checked when a stage starts)."""

    source: str = "normal"
    target: str = "moons"

    def checks(self):
        yield "source", need(bool(self.source), "needs a distribution name", self.source)
        yield "target", need(bool(self.target), "needs a distribution name", self.target)


@dataclass
class ModelConfig:
    """The velocity network: the MLP (vectors), the conv UNet (images [C, H, W]) or a user's own factory.

    kind "auto" picks the UNet for data of feature shape [C, H, W] and the MLP otherwise; width, depth and
    levels None pick the preset (bezier_distill.models.PRESETS). factory "package.module:function" is called
    with the feature shape (a tuple) and returns any nn.Module f(x [B, *F], t [B]) -> [B, *F]; the other
    fields are then not used.
    """

    kind: Literal["auto", "mlp", "unet"] = "auto"
    width: int | None = None        # MLP hidden units (256 for 2-D toys, 512 above); UNet channels at full size (32)
    depth: int | None = None        # MLP residual blocks (3 for 2-D toys, 4 above); UNet residual blocks per level (1)
    levels: int | None = None       # UNet 2x downsamplings (2); not used by the MLP
    time_features: int = 64         # sinusoidal features of t (even)
    factory: str = ""               # "package.module:function" building the network from the feature shape

    def checks(self):
        yield "width", need(self.width is None or self.width >= 1, "must be >= 1 or null", self.width)
        yield "depth", need(self.depth is None or self.depth >= 0, "must be >= 0 or null", self.depth)
        yield "levels", need(self.levels is None or self.levels >= 0, "must be >= 0 or null", self.levels)
        yield "time_features", need(self.time_features >= 2 and self.time_features % 2 == 0,
                                    "must be even and >= 2", self.time_features)
        module, colon, function = self.factory.partition(":")
        yield "factory", need(not self.factory or (module and colon and function),
                              "must be 'package.module:function'", self.factory)


@dataclass
class TrainConfig:
    """Optimisation, the training objective along the stored paths, and checkpointing."""

    steps: int = 2000
    batch_size: int = 256            # the global batch: under torchrun each rank takes batch_size / world size rows
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 100          # linear learning-rate warmup, then constant
    grad_clip: float = 1.0           # max global gradient norm; 0 disables clipping
    ema_decay: float = 0.999
    target: Literal["velocity", "endpoint"] = "velocity"
    loss: Literal["mse", "pseudo_huber"] = "mse"
    huber_c: float | None = None     # None: 0.00054 * sqrt(D)
    time_sampling: Literal["uniform", "u_shaped", "grid"] = "uniform"
    u_shape_a: float = 4.0           # u_shaped density ~ exp(a t) + exp(a (1 - t))
    grid_size: int = 8               # grid: t uniform over {0, 1/K, ..., (K-1)/K}
    seed: int = 0
    checkpoint_every: int = 500
    keep_checkpoints: int = 2        # the last K checkpoints kept: a resume falls back to an older intact one
    log_every: int = 50
    bf16: bool = False               # bfloat16 autocast of the network (meant for GPUs)
    compile: bool = False            # torch.compile of the network (meant for GPUs)
    backend: Literal["auto", "torch", "cpp", "triton", "cuda"] = "auto"  # bezier_kernels backend

    def checks(self):
        yield "steps", need(self.steps >= 1, "must be >= 1", self.steps)
        yield "batch_size", need(self.batch_size >= 1, "must be >= 1", self.batch_size)
        yield "lr", need(self.lr > 0, "must be > 0", self.lr)
        yield "weight_decay", need(self.weight_decay >= 0, "must be >= 0", self.weight_decay)
        yield "warmup_steps", need(self.warmup_steps >= 0, "must be >= 0", self.warmup_steps)
        yield "grad_clip", need(self.grad_clip >= 0, "must be >= 0 (0 disables clipping)", self.grad_clip)
        yield "ema_decay", need(0 <= self.ema_decay < 1, "must be in [0, 1)", self.ema_decay)
        yield "huber_c", need(self.huber_c is None or self.huber_c > 0, "must be > 0 or null", self.huber_c)
        yield "u_shape_a", need(self.u_shape_a > 0, "must be > 0", self.u_shape_a)
        yield "grid_size", need(self.grid_size >= 1, "must be >= 1", self.grid_size)
        yield "seed", need(self.seed >= 0, "must be >= 0", self.seed)
        yield "checkpoint_every", need(self.checkpoint_every >= 1, "must be >= 1", self.checkpoint_every)
        yield "keep_checkpoints", need(self.keep_checkpoints >= 1, "must be >= 1", self.keep_checkpoints)
        yield "log_every", need(self.log_every >= 1, "must be >= 1", self.log_every)


@dataclass
class SolverConfig:
    """ODE solver: N steps of Euler or Heun on the uniform grid of [0, 1]."""

    method: Literal["euler", "heun"] = "euler"
    steps: int = 100

    def checks(self):
        yield "steps", need(self.steps >= 1, "must be >= 1", self.steps)


@dataclass
class GenerateConfig:
    """How many pairs to simulate, in chunks of chunk_size (each chunk seeded from seed and its index)."""

    num_samples: int = 20000
    chunk_size: int = 5000
    seed: int = 0
    solver: SolverConfig = field(default_factory=SolverConfig)

    def checks(self):
        yield "num_samples", need(self.num_samples >= 1, "must be >= 1", self.num_samples)
        yield "chunk_size", need(self.chunk_size >= 1, "must be >= 1", self.chunk_size)
        yield "seed", need(self.seed >= 0, "must be >= 0", self.seed)


def velocity_target_problem(train: TrainConfig) -> str | None:
    return need(train.target == "velocity", "a teacher fits the velocity: must be 'velocity'", train.target)
