"""Drop-in use of the fused path ops inside other flow-matching libraries.

    BezierProbPath                facebookresearch/flow_matching (PyPI flow-matching): a ProbPath
    BezierConditionalFlowMatcher  torchcfm (PyPI torchcfm): a ConditionalFlowMatcher

Each adapter lives in a module named after its library and imports that library only when the
adapter is first used; without the library installed it still works, on a stand-in base class.
"""
from __future__ import annotations

import importlib

_MODULE_OF = {"BezierProbPath": "flow_matching", "BezierConditionalFlowMatcher": "torchcfm"}

__all__ = list(_MODULE_OF)


def __getattr__(name: str):
    if name in _MODULE_OF:
        return getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
