"""Fixtures for every test: a BEZIER_KERNELS_BACKEND in the caller's shell must not leak in."""
from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _no_backend_override(monkeypatch):
    """Tests pick backends explicitly; a BEZIER_KERNELS_BACKEND in the caller's shell must not leak in."""
    if os.environ.get("BEZIER_KERNELS_BACKEND"):
        monkeypatch.delenv("BEZIER_KERNELS_BACKEND")
