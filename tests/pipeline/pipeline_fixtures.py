"""Fixtures of the pipeline tests: tiny configs and one trained 1-RF teacher shared by the session.

Test modules import what they use from here (not a conftest.py: tests/conftest.py is imported by
name as `conftest`, and a second one would shadow it). The networks are tiny, and on a loaded
2-core machine extra intra-op threads only spin, so the pipeline tests run torch single-threaded
(restored afterwards).
"""
from __future__ import annotations

import pytest
import torch

from bezier_distill import stages
from bezier_distill.config import DataConfig, GenerateConfig, ModelConfig, SolverConfig, TeacherStage, TrainConfig

TINY_MODEL = ModelConfig(width=64, depth=2, time_features=32)


def tiny_train(**changes) -> TrainConfig:
    base = dict(steps=60, batch_size=128, lr=3e-3, warmup_steps=10, checkpoint_every=20, log_every=10, ema_decay=0.99)
    return TrainConfig(**{**base, **changes})


def tiny_generate(**changes) -> GenerateConfig:
    base = dict(num_samples=600, chunk_size=256, seed=3, solver=SolverConfig(steps=8))
    return GenerateConfig(**{**base, **changes})


@pytest.fixture(autouse=True)
def single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def teacher_run(tmp_path_factory) -> str:
    """A 1-RF teacher from a standard normal to two moons (400 steps, ~3 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("teacher") / "rf1"
    cfg = TeacherStage(data=DataConfig("normal", "moons"), model=TINY_MODEL,
                       train=tiny_train(steps=400, batch_size=256, checkpoint_every=400, log_every=50))
    stages.train_teacher(cfg, out, progress=False)
    torch.set_num_threads(threads)
    return str(out)
