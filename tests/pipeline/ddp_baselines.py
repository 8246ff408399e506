"""A few steps of CAF (the UNet family, on 1x4x4 images) and MeanFlow (the MLP) through the baselines' loop.

Run by tests/pipeline/test_distributed.py under `torchrun --nproc_per_node=2 ddp_baselines.py OUT`, and in the
test's own process (a world of one) as the reference: `train_baselines(OUT)` writes OUT/caf and OUT/meanflow.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from bezier_distill import distributed
from bezier_distill.baselines import caf, meanflow
from bezier_distill.config import ModelConfig, TrainConfig
from bezier_distill.config.baselines import CAFConfig, MeanFlowConfig
from bezier_distill.data import Distribution, IndependentPairs, StoredPairs, get_distribution

SHAPE = (1, 4, 4)


def _train(**changes) -> TrainConfig:
    return TrainConfig(**{**dict(steps=12, batch_size=64, lr=3e-3, warmup_steps=2, checkpoint_every=6, log_every=3,
                                 ema_decay=0.9), **changes})


def image_coupling(n: int = 512) -> StoredPairs:
    x0 = torch.randn(n, *SHAPE, generator=torch.Generator().manual_seed(0))
    return StoredPairs(x0, 0.5 * x0 + 1.0, None, 0)


def vector_pairs() -> IndependentPairs:
    target = Distribution("shifted", 2, lambda n, gen: 0.5 * torch.randn(n, 2, generator=gen) + 1.0)
    return IndependentPairs(get_distribution("normal:2"), target)


def train_baselines(out: str | Path) -> None:
    out = Path(out)
    caf.train_caf(CAFConfig(velocity=_train(), acceleration=_train()), ModelConfig(kind="unet", width=16, levels=1),
                  image_coupling(), out / "caf", run_info={}, progress=False)
    meanflow.train_meanflow(MeanFlowConfig(train=_train(batch_size=32)), ModelConfig(width=32, depth=1,
                            time_features=8), vector_pairs(), out / "meanflow", run_info={}, progress=False)


if __name__ == "__main__":
    with distributed.launch("cpu"):
        train_baselines(sys.argv[1])
