"""Tiny configs shared by the pipeline tests (the networks are tiny: seconds per run)."""
from __future__ import annotations

from bezier_distill.config import GenerateConfig, ModelConfig, SolverConfig, TrainConfig

TINY_MODEL = ModelConfig(width=64, depth=2, time_features=32)


def tiny_train(**changes) -> TrainConfig:
    base = dict(steps=60, batch_size=128, lr=3e-3, warmup_steps=10, checkpoint_every=20, log_every=10, ema_decay=0.99)
    return TrainConfig(**{**base, **changes})


def tiny_generate(**changes) -> GenerateConfig:
    base = dict(num_samples=600, chunk_size=256, seed=3, solver=SolverConfig(steps=8))
    return GenerateConfig(**{**base, **changes})
