"""Fixtures of the kernel tests: every backend on every device, skipped with the reason where it cannot run."""
from __future__ import annotations

import pytest

from kernel_cases import backend_cases


@pytest.fixture(params=backend_cases())
def backend_device(request):
    return request.param


@pytest.fixture(params=backend_cases(fused_only=True))
def fused_backend_device(request):
    return request.param
