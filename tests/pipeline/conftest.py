"""Fixtures of the pipeline tests: torch single-threaded, and one trained 1-RF teacher per session.

On a loaded 2-core machine extra intra-op threads only spin, so the pipeline tests run torch
single-threaded (restored afterwards).
"""
from __future__ import annotations

import pytest
import torch

from bezier_distill import stages
from bezier_distill.config import DataConfig, TeacherConfig

from pipeline_helpers import TINY_MODEL, tiny_train


@pytest.fixture(autouse=True)
def _single_thread():
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
    cfg = TeacherConfig(data=DataConfig("normal", "moons"), model=TINY_MODEL,
                       train=tiny_train(steps=400, batch_size=256, checkpoint_every=400, log_every=50))
    stages.train_teacher(cfg, out, progress=False)
    torch.set_num_threads(threads)
    return str(out)
