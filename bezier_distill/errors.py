"""User errors: the one error class the CLI prints as a single line, and the ways to name what is wrong.

Every mistake a user can make (a config value, a path, a file made by another config) raises
ConfigError with a one-line message that names the field, e.g.
"config field 'distill.train.lr': must be > 0, got -0.1". This module imports nothing of the package.
"""
from __future__ import annotations

import typing
from typing import Any


class ConfigError(ValueError):
    """A user error in a config value or a path; the message names the field and is one line."""


def join(where: str, name: str) -> str:
    """The dotted name of field `name` inside section `where` ("" for the top)."""
    return f"{where}.{name}" if where else name


def field_error(where: str, message: str) -> ConfigError:
    """The error for config field `where` (a dotted path such as 'distill.train.lr')."""
    return ConfigError(f"config field '{where}': {message}")


def fail(where: str, message: str) -> typing.NoReturn:
    raise field_error(where, message)


def need(ok: bool, requirement: str, value: Any) -> str | None:
    """The problem string "requirement, got value", or None when ok (for a config's checks())."""
    return None if ok else f"{requirement}, got {value!r}"


def first_difference(old: Any, new: Any, where: str = "") -> tuple[str, Any, Any] | None:
    """The first field (dotted path) whose value differs between two nested mappings, with both values."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in list(old) + [k for k in new if k not in old]:
            found = first_difference(old.get(key), new.get(key), join(where, key))
            if found:
                return found
        return None
    return None if old == new else (where, old, new)


def check_unchanged(old: dict, new: dict, *, section: str, holder: str, remedy: str) -> None:
    """ConfigError naming the first field where `new` (this run's settings) differs from `old` (those that
    made what `holder` describes, e.g. "'runs/rf1' holds a run"); `remedy` says what to do instead."""
    found = first_difference(old, new)
    if found:
        name, before, now = found
        raise field_error(join(section, name), f"{holder} made with {before!r}, this run asks for {now!r}; {remedy}")
